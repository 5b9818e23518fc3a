package supervisor

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// niceOf is the nice value of pid's main thread (/proc/PID/stat field 19).
func niceOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	n, _ := strconv.Atoi(f[16])
	return n
}

// A pool with BootNice starts its workers at that nice value, threads
// included; Promote raises them to 0, and a worker restarted after it
// starts at 0.
func TestBootNiceUntilPromoted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("raising the priority back needs root")
	}
	ss := testSockets(t)
	spec := testSpec(t, ss, helperStart(t), 1)
	spec.BootNice = 10
	p := startPool(t, spec)
	pid := p.Status()[0].PID
	if n := niceOf(t, pid); n != 10 {
		t.Fatalf("booted at nice %d", n)
	}
	if err := p.Promote(); err != nil {
		t.Fatal(err)
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		if n := niceOf(t, tid); n != 0 {
			t.Fatalf("thread %d of the promoted worker at nice %d", tid, n)
		}
	}
	syscall.Kill(pid, syscall.SIGKILL)
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := p.Status()[0]
		if st.PID != pid && st.PID > 0 && st.State == Running {
			if n := niceOf(t, st.PID); n != 0 {
				t.Fatalf("restarted after the promotion at nice %d", n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no restart: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

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
