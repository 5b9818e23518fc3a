package supervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPreflightStoppedByTheCallerKeepsTheLastFinishedFailure: when the
// caller's context ends while a health command is running, the command is
// killed, the preflight reports the caller's reason rather than a verdict,
// and the message is what the last finished run said, not "signal: killed".
// The second run tells the test through a FIFO that it has started, so the
// cancellation always lands on a running command: no timing is involved.
func TestPreflightStoppedByTheCallerKeepsTheLastFinishedFailure(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "started")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Read and write: opening does not wait for a writer, and the read end
	// goes through the runtime poller, so it honours a deadline.
	started, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer started.Close()

	ss := testSockets(t)
	spec := testSpec(t, ss, helperStart(t), 1)
	probe := Probe{
		Command: `if [ -e ran ]; then echo started >"$STARTED"; exec sleep 60; fi; touch ran; echo not ready; exit 1`,
		Dir:     dir,
		Env:     []string{"STARTED=" + fifo},
		Timeout: time.Minute, // never reached: the test stops the preflight first
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- preflightErr(ctx, spec, probe) }()

	if err := started.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := started.Read(make([]byte, 64)); err != nil {
		cancel()
		t.Fatalf("second health run never started: %v (preflight: %v)", err, <-done)
	}
	cancel()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("preflight did not return after its context was cancelled")
	}
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnhealthy) {
		t.Fatalf("err = %v, want the caller's cancellation and no verdict", err)
	}
	if !strings.Contains(err.Error(), "not ready") || strings.Contains(err.Error(), "killed") {
		t.Fatalf("err = %v, want the last finished run's output, not the kill", err)
	}
}

// TestCommandProbeCutOffByTheDeadlineWrapsIt: a health command killed
// because ctx ended returns an error wrapping ctx.Err(), which Preflight
// reads as "no verdict"; one that exits on its own does not, even with the
// same output.
func TestCommandProbeCutOffByTheDeadlineWrapsIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := probeCommand(ctx, Probe{Command: "echo not ready; exec sleep 60"}, "127.0.0.1:1")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("killed run: err = %v, want it to wrap the deadline", err)
	}
	err = probeCommand(context.Background(), Probe{Command: "echo not ready; exit 1"}, "127.0.0.1:1")
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("finished run: err = %v, want its output and no deadline", err)
	}
}
