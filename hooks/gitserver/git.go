package gitserver

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/hooks"
)

// gitSetup is what every transport passes to git.
type gitSetup struct {
	Socket  string // the daemon's control socket, for the hook
	HookDir string // core.hooksPath: proc-receive and post-receive
	MaxPack int64  // receive.maxInputSize
}

// gitCommand is git running service ("git-receive-pack" or
// "git-upload-pack") on app's repository, with the deploy branch routed to
// the proc-receive hook. HTTP and SSH share it, so a push behaves the same
// on both.
func gitCommand(ctx context.Context, g gitSetup, app *deployer.App, svc, pusher, protocol string, args ...string) *exec.Cmd {
	ref := "refs/heads/" + app.Branch()
	full := []string{
		"-c", "core.hooksPath=" + g.HookDir,
		"-c", "receive.procReceiveRefs=" + ref,
		"-c", "receive.maxInputSize=" + strconv.FormatInt(g.MaxPack, 10),
		"-c", "receive.fsckObjects=true",
		"-c", "uploadpack.allowFilter=true",
		strings.TrimPrefix(svc, "git-"),
	}
	full = append(full, args...)
	full = append(full, app.Repo().Path())
	cmd := exec.CommandContext(ctx, "git", full...)
	// git gets none of the daemon's GIT_ variables: they could point it at
	// another repository or change how it stores objects.
	cmd.Env = append(deployer.CommandEnv("GIT_"),
		hooks.EnvSocket+"="+g.Socket,
		hooks.EnvApp+"="+app.Name(),
		hooks.EnvBranch+"="+app.Branch(),
		hooks.EnvPusher+"="+pusher,
		hooks.EnvReceiveStart+"="+strconv.FormatInt(time.Now().UnixNano(), 10),
	)
	if protocol != "" {
		cmd.Env = append(cmd.Env, "GIT_PROTOCOL="+protocol)
	}
	// When the client goes away, git is asked to stop, not killed:
	// receive-pack removes its quarantine (objects/tmp_objdir-incoming-*)
	// on SIGTERM, and a SIGKILL would leave the half-received pack on disk
	// for good. WaitDelay then bounds how long it may take.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}
