package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/deployer/deployer/internal/account"
	"github.com/deployer/deployer/internal/cgroup"
)

// runShell runs sh -c script in dir, in its own process group and, if g is
// set, its own cgroup, with output to out. On timeout or ctx cancel the
// whole group is killed, and once it ends whatever it left (background
// children, including any that left the process group: the cgroup holds
// them) is killed too, so a build cannot outlive itself or hang Wait.
func runShell(ctx context.Context, dir, script string, env []string, out io.Writer, timeout time.Duration, g *cgroup.Group, acct *account.Account) error {
	// Pdeathsig is tied to the thread that forks: keep it until Wait returns,
	// so a daemon killed mid-build takes the build's shell with it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = acct.Env(env)
	// Our own pipe, not os/exec's: Wait then returns when the shell exits,
	// whoever else holds the pipe, and the leftovers are killed before the
	// rest of the output is read.
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: acct.Credential()}
	if g != nil {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, g.FD()
	}
	cmd.Cancel = func() error {
		if g != nil {
			_ = g.Kill()
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(out, r); close(copied) }()
	err = cmd.Start()
	w.Close()
	if err == nil {
		err = cmd.Wait()
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // stragglers left in the group
		if g != nil {
			_ = g.Kill() // and those that left it
		}
	}
	select {
	case <-copied:
	case <-time.After(2 * time.Second): // a straggler out of reach (no cgroup) holds the pipe
		r.Close()
		<-copied
	}
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("timed out after %s", timeout)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("cancelled: %w", ctx.Err())
	}
	return err
}

// commandSeq tells apart the cgroups of an app's successive commands.
var commandSeq atomic.Int64

// shell runs a build or hook command (kind names it) in the release dir
// like runShell, in a cgroup of its own where cgroups are used, removed once
// it ends.
func (j *job) shell(ctx context.Context, kind, dir, script string, env []string) error {
	var g *cgroup.Group
	if tree := j.opts.Cgroups; tree != nil {
		var err error
		name := fmt.Sprintf("%s/%s-%s-%d", j.cfg.Name, kind, filepath.Base(dir), commandSeq.Add(1))
		if g, err = tree.New(name); err != nil {
			j.log.Warn("no cgroup for a command: process group only", "err", err)
			g = nil
		} else if err := g.Limit(limits(j.cfg.Limits)); err != nil && !errors.Is(err, cgroup.ErrNotEnforced) {
			j.log.Warn("limits of a command", "err", err)
		}
	}
	err := runShell(ctx, dir, script, env, j.pr.indented(), j.cfg.BuildTimeout, g, j.acct)
	if g != nil {
		if rerr := g.Remove(); rerr != nil {
			j.log.Error("remove a command's cgroup", "err", rerr)
		}
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
