package deployer

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// runShell runs sh -c script in dir, in its own process group, with output
// to out. On timeout or ctx cancel the whole group is killed, so a build's
// background children cannot outlive it or hang Wait.
func runShell(ctx context.Context, dir, script string, env []string, out io.Writer, timeout time.Duration) error {
	// Pdeathsig is tied to the thread that forks: keep it until Wait returns,
	// so a daemon killed mid-build takes the build's shell with it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // stragglers left in the group
	}
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("timed out after %s", timeout)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("cancelled: %w", ctx.Err())
	}
	return err
}

// commandEnv is the daemon's environment without its own deployer, socket
// activation and notify variables, plus extra.
func commandEnv(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "DEPLOYER_") || strings.HasPrefix(k, "LISTEN_") || k == "NOTIFY_SOCKET" ||
			strings.HasPrefix(k, "WATCHDOG_") || k == "FDSTORE" {
			continue
		}
		if _, ok := extra[k]; ok {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// CommandEnv is the environment of a command the daemon runs on its own
// behalf, such as git for a pusher: the daemon's, without its own variables
// (as for a build) and without any whose name starts with one of drop.
func CommandEnv(drop ...string) []string {
	return slices.DeleteFunc(commandEnv(nil), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		for _, p := range drop {
			if strings.HasPrefix(k, p) {
				return true
			}
		}
		return false
	})
}
