package supervisor

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// waitState polls worker 0 of p until it is in state, or fails after d.
func waitState(t *testing.T, p *Pool, state WorkerState, d time.Duration) WorkerStatus {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := p.Status()[0]
		if st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not %s within %s: %+v", state, d, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCrashLoopIsShownBackedOffAndLogged: a worker that passes min_uptime
// and then exits 1, again and again, is not restarted at once each time:
// its backoff grows (it is reset only by a run much longer than
// min_uptime), it shows as crashloop from the third restart, and every
// exit, with its status, and every restart reach the daemon's log. Once a
// run lasts stableAfter, the backoff is reset and it shows running again.
func TestCrashLoopIsShownBackedOffAndLogged(t *testing.T) {
	old := stableFloor
	stableFloor = 3 * time.Second
	t.Cleanup(func() { stableFloor = old })
	ss := testSockets(t)
	// Exits 1 after 300ms (min_uptime is 100ms) for its first 4 runs, then
	// stays up: the runs count themselves in a file.
	dir := t.TempDir()
	spec := testSpec(t, ss, `n=$(cat runs 2>/dev/null || echo 0); echo $((n+1)) > runs; if [ $n -lt 4 ]; then sleep 0.3; exit 1; fi; exec sleep 60`, 1)
	spec.Dir = dir
	logs := &syncBuffer{}
	spec.Logger = slog.New(slog.NewTextHandler(logs, nil))
	p := startPool(t, spec)

	start := time.Now()
	st := waitState(t, p, CrashLoop, 30*time.Second)
	if st.Restarts < crashLoopAfter-1 {
		t.Fatalf("crashloop after %d restarts", st.Restarts)
	}
	// Backoffs 1s, 1.5s, 2.25s: not reset by the runs that passed min_uptime.
	if took := time.Since(start); took < 2500*time.Millisecond {
		t.Fatalf("three restarts within %s: the backoff was reset by min_uptime", took)
	}
	waitState(t, p, Running, 30*time.Second) // the fifth run stays up...
	st = p.Status()[0]
	if st.State != Running || st.Restarts != 4 {
		t.Fatalf("after the loop: %+v", st)
	}
	waitLog := func(want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(logs.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the daemon's log:\n%s", want, logs)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLog("worker stable again: backoff reset") // ...for stableAfter
	for _, want := range []string{`msg="worker exited unexpectedly"`, `status="exit status 1"`, "restart_in=1.5s",
		"restart_in=2.25s", `msg="worker restarted"`, "app=t release=v1 worker=0"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %q in the daemon's log:\n%s", want, logs)
		}
	}
	if n := strings.Count(logs.String(), "worker exited unexpectedly"); n != 4 {
		t.Errorf("%d exits logged, want 4:\n%s", n, logs)
	}
}
