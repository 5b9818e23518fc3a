package gitserver

import (
	"context"
	"io"
	"os/exec"
	"strconv"
	"strings"
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
	// When the client goes away git is not signalled at once: its stdin
	// (the request body, the SSH channel) ends, receive-pack fails to
	// unpack and exits normally, and on that path only it removes its
	// quarantine (objects/tmp_objdir-incoming-*); git ≥ 2.38 leaves it on
	// any signal, SIGTERM included. WaitDelay bounds the wait: then git is
	// killed, and the sweep (deployer.Repo.SweepQuarantines) takes what
	// it left.
	cmd.Cancel = func() error { return nil }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// drained passes git's output to w until w fails (the client went away),
// then swallows the rest. git must never write into a closed pipe: it would
// die of SIGPIPE, and a git that dies of a signal leaves its quarantine
// behind. Drained, it reaches the end of its input and exits on its own.
func drained(w io.Writer) io.Writer { return &drainWriter{w: w} }

type drainWriter struct {
	w    io.Writer
	gone bool
}

func (d *drainWriter) Write(b []byte) (int, error) {
	if !d.gone {
		if _, err := d.w.Write(b); err != nil {
			d.gone = true
		}
	}
	return len(b), nil
}
