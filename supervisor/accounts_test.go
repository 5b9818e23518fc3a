package supervisor

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/account"
	"github.com/deployer/deployer/internal/cgroup"
)

func testTree(t *testing.T) *cgroup.Tree {
	t.Helper()
	tr, err := cgroup.Open(t.TempDir())
	if errors.Is(err, cgroup.ErrUnavailable) {
		t.Skipf("no writable cgroup v2 here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Prune)
	return tr
}

const sendReady = `python3 -c 'import os,socket; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])'`

// With cgroups, READY=1 counts from any process in the worker's own
// cgroup (here the shell's child, not exec'd), as systemd's
// NotifyAccess=all; without them only from the worker's pid
// (TestNotifyIgnoresOtherSenders).
func TestNotifyCountsReadyFromTheWorkersOwnCgroup(t *testing.T) {
	ss := testSockets(t)
	spec := testSpec(t, ss, sendReady+"; sleep 60", 1)
	spec.Notify = testNotifier(t)
	spec.Cgroups = testTree(t)
	spec.Notify.OnlyFrom(spec.Cgroups.Path())
	startPool(t, spec)
}

// A process outside the daemon's tree is not heard at all, not even kept
// for a worker that might register later: with the socket open to every
// local user, no one else can fill that queue. And READY=1 from a process
// in another worker's cgroup does not make this one up.
func TestNotifyDropsSendersOutsideTheTreeAndOtherWorkers(t *testing.T) {
	tr := testTree(t)
	n := testNotifier(t)
	n.OnlyFrom(tr.Path())
	for i := 0; i < 20; i++ {
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.Path(), Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("READY=1"))
		c.Close()
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		n.mu.Lock()
		kept := len(n.early)
		n.mu.Unlock()
		if kept > 0 {
			t.Fatalf("kept %d messages from a sender outside the tree", kept)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// b's child says READY=1 from b's cgroup while a, which never does,
	// starts: a does not come up on b's word.
	ss := testSockets(t)
	spec := testSpec(t, ss, "exec sleep 60", 1) // never sends READY=1 itself
	spec.Notify, spec.Cgroups, spec.App = n, tr, "a"
	other := testSpec(t, testSockets(t), sendReady+"; sleep 60", 1)
	other.Notify, other.Cgroups, other.App = n, tr, "b"
	startPool(t, other)
	if _, err := StartPool(context.Background(), spec, 2*time.Second); !errors.Is(err, ErrNotUp) {
		t.Fatalf("a worker that never sent READY=1 came up: %v", err)
	}
}

// Workers, and the health command, run as the pool's account.
func TestWorkersRunAsTheAccount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
	acct, err := account.Lookup("nobody", "")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := os.Chmod(filepath.Dir(out), 0o777); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Dir(filepath.Dir(out)), filepath.Dir(filepath.Dir(filepath.Dir(out)))} {
		os.Chmod(p, 0o711)
	}
	ss := testSockets(t)
	spec := testSpec(t, ss, `echo "$(id -u) $(id -G) $HOME" > `+out+`; exec sleep 60`, 1)
	spec.Dir = filepath.Dir(out)
	spec.Account = acct
	startPool(t, spec)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(b)); len(got) != 3 || got[0] != "65534" || got[1] != "65534" || got[2] != acct.Home {
		t.Fatalf("worker ran as %q", b)
	}
	probe := Probe{Command: "test $(id -u) = 65534", Dir: spec.Dir, Account: acct, Timeout: 5 * time.Second}
	if err := probeCommand(context.Background(), probe, "127.0.0.1:1"); err != nil {
		t.Fatalf("health command: %v", err)
	}
	if err := probeCommand(context.Background(), Probe{Command: "test $(id -u) = 65534", Dir: spec.Dir, Timeout: 5 * time.Second}, "127.0.0.1:1"); err == nil {
		t.Fatal("the test is wrong: without an account the command runs as nobody")
	}
}
