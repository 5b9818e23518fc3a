package hooks

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/deployer/deployer/control"
	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/internal/escape"
	"github.com/deployer/deployer/internal/pktline"
)

// Environment the daemon gives git receive-pack, and so the hook.
const (
	EnvSocket       = "DEPLOYER_SOCKET"
	EnvApp          = "DEPLOYER_APP"
	EnvBranch       = "DEPLOYER_BRANCH"
	EnvPusher       = "DEPLOYER_PUSHER"
	EnvReceiveStart = "DEPLOYER_RECEIVE_START" // unix nanoseconds when the pack began to arrive
)

// ProcReceive speaks git's proc-receive protocol on in/out for one push and
// relays each command for the deploy branch to the daemon; the deploy's
// progress goes to progress (git shows the hook's stderr as "remote:" lines).
// getenv supplies the variables above.
func ProcReceive(ctx context.Context, in io.Reader, out, progress io.Writer, getenv func(string) string) error {
	r := bufio.NewReader(in)
	if _, err := pktline.ReadSection(r); err != nil { // version=1\0features
		return fmt.Errorf("proc-receive: %w", err)
	}
	if err := pktline.Write(out, "version=1\n"); err != nil {
		return fmt.Errorf("proc-receive: %w", err)
	}
	if err := pktline.Flush(out); err != nil {
		return fmt.Errorf("proc-receive: %w", err)
	}
	cmds, err := pktline.ReadSection(r)
	if err != nil {
		return fmt.Errorf("proc-receive: %w", err)
	}
	var received time.Duration
	if ns, err := strconv.ParseInt(getenv(EnvReceiveStart), 10, 64); err == nil {
		received = time.Since(time.Unix(0, ns))
	}
	client := control.NewClient(getenv(EnvSocket))
	branchRef := "refs/heads/" + getenv(EnvBranch)
	var results []string
	for _, line := range cmds {
		f := strings.Fields(line)
		if len(f) != 3 {
			return fmt.Errorf("proc-receive: bad command %q", line)
		}
		old, rev, ref := f[0], f[1], f[2]
		switch {
		case ref != branchRef:
			results = append(results, "ng "+ref+" only the deploy branch "+branchRef+" is deployed")
		case rev == deployer.ZeroRev:
			results = append(results, "ng "+ref+" deleting the deploy branch is not allowed")
		default:
			push := deployer.Push{Ref: ref, Old: old, New: rev, Pusher: getenv(EnvPusher), Received: received}
			if err := client.Push(ctx, getenv(EnvApp), push, progress); err != nil {
				results = append(results, "ng "+ref+" deploy failed: "+oneLine(err.Error()))
			} else {
				results = append(results, "ok "+ref)
			}
		}
	}
	for _, res := range results {
		if err := pktline.Write(out, res+"\n"); err != nil {
			return fmt.Errorf("proc-receive: %w", err)
		}
	}
	return pktline.Flush(out)
}

// oneLine is an error for git's "remote rejected" line: one line, its
// control characters escaped (it can quote a commit or a Procfile).
func oneLine(s string) string {
	return escape.Controls(strings.Join(strings.Fields(s), " "))
}

// PostReceive tells the pusher, for each ref that is not the deploy branch,
// that it was stored but not deployed. in has git's "old new ref" lines.
func PostReceive(in io.Reader, out io.Writer, getenv func(string) string) error {
	branchRef := "refs/heads/" + getenv(EnvBranch)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[2] == branchRef {
			continue
		}
		switch {
		case f[1] == deployer.ZeroRev:
			fmt.Fprintf(out, "-----> %s deleted\n", escape.Controls(f[2]))
		default:
			fmt.Fprintf(out, "-----> %s stored, not deployed: only %s deploys\n", escape.Controls(f[2]), getenv(EnvBranch))
		}
	}
	return sc.Err()
}
