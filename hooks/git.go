package hooks

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/deployer/deployer/deployer"
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
	cmd.Env = append(commandEnv(),
		EnvSocket+"="+g.Socket,
		EnvApp+"="+app.Name(),
		EnvBranch+"="+app.Branch(),
		EnvPusher+"="+pusher,
		EnvReceiveStart+"="+strconv.FormatInt(time.Now().UnixNano(), 10),
	)
	if protocol != "" {
		cmd.Env = append(cmd.Env, "GIT_PROTOCOL="+protocol)
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// commandEnv is the daemon's environment without deployer or git variables.
func commandEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DEPLOYER_") || strings.HasPrefix(kv, "GIT_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
