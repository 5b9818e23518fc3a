package worker_test

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// loadClients keep-alive connections carry the load of a swap, each
// reconnecting every reconnectEvery requests so that a newly started worker
// gets connections while the old one still serves.
const (
	loadClients    = 32
	reconnectEvery = 50
)

// workerName finds "worker NAME:" in an answer such as
// "hello from v3 (0123abc) worker 1: hi".
func workerName(body string) (string, bool) {
	_, rest, ok := strings.Cut(body, "worker ")
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, ":")
	return name, ok && name != ""
}

// waitServed waits until worker who has answered at least n requests.
func waitServed(t *testing.T, l *testutil.Load, who string, n int) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("%d responses from %s", n, who), func() bool {
		return l.Served(who) >= n
	})
}

// swapUnderLoad proves a worker's drain: under keep-alive load on one shared
// socket, it starts worker "blue", then worker "green" on the same socket,
// stops blue with SIGTERM, and requires blue to exit 0 and no request to
// fail. start starts the named worker with the socket at fd 3; the worker
// must answer / with "worker NAME:" in the body.
func swapUnderLoad(t *testing.T, start func(t *testing.T, name string, sock *os.File) *proc) {
	ln := listenTCP(t)
	sock := inheritable(t, ln)

	blue := start(t, "blue", sock)
	l := testutil.StartLoad(t, "http://"+ln.Addr().String()+"/", loadClients,
		testutil.ReconnectEvery(reconnectEvery), testutil.Tally(workerName))
	waitServed(t, l, "blue", 500)
	green := start(t, "green", sock)
	waitServed(t, l, "green", 100)

	blue.signal(t, syscall.SIGTERM)
	blue.wait(t, 30*time.Second)
	after := l.Served("green")
	waitServed(t, l, "green", after+1000) // green carries the load alone
	if l.AskedToClose("blue") == 0 {
		t.Errorf("blue never answered with Connection: close while draining")
	}
	l.Finish(t, "the swap", 500+100+1000)
	green.signal(t, syscall.SIGTERM)
	green.wait(t, 30*time.Second)
}

func TestServeSwapUnderLoadLosesNoRequest(t *testing.T) {
	swapUnderLoad(t, func(t *testing.T, name string, sock *os.File) *proc {
		ns := listenNotify(t, false)
		p := startHelper(t, "serve", []*os.File{sock}, "NOTIFY_SOCKET="+ns.name, "DEPLOYER_WORKER="+name)
		ns.expect(t, "READY=1", 30*time.Second)
		return p
	})
}
