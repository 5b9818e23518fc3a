package supervisor

import (
	"strings"
	"testing"
	"time"
)

// StopAccepting returns once the workers closed the app's socket after
// their stop signal, and says so when one keeps it past the timeout.
func TestStopAcceptingWaitsForTheListenersToClose(t *testing.T) {
	ss := testSockets(t)
	p := startPool(t, testSpec(t, ss, helperStart(t), 2))
	start := time.Now()
	if err := p.StopAccepting(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, w := range p.workers {
		if pid := w.holding(map[uint64]bool{}); pid != 0 {
			t.Fatalf("worker %d not signalled", pid)
		}
	}
	t.Logf("the helper workers let go of the socket %s after their stop signal", time.Since(start))

	// sleep holds fd 3 and ignores nothing: it dies on TERM, but a shell
	// that traps TERM keeps its copy.
	stubborn := startPool(t, testSpec(t, ss, `trap "" TERM; sleep 60 & wait; wait`, 1))
	err := stubborn.StopAccepting(300 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "still hold the app's socket") {
		t.Fatalf("a worker that keeps the socket: %v", err)
	}
}
