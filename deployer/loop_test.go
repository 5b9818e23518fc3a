package deployer

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// blocker is an operation that holds the app's turn until released or
// cancelled, and reports who cancelled it.
type blocker struct {
	started, release chan struct{}
}

func newBlocker() *blocker {
	return &blocker{started: make(chan struct{}), release: make(chan struct{})}
}

func (b *blocker) run(j *job) error {
	close(b.started)
	select {
	case <-b.release:
		return nil
	case <-j.ctx.Done():
		return errors.New("stopped: " + cancelledBy(j.ctx))
	}
}

// hold starts b as the app's operation "first" and returns its outcome's channel.
func hold(ta *testApp, b *blocker, cancelable bool) chan error {
	res := make(chan error, 1)
	go func() {
		res <- ta.do(context.Background(), &op{what: "first", cancelable: cancelable, run: b.run})
	}()
	<-b.started
	return res
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSecondOperationWaitsTellingWhoHoldsTheTurnThenRuns: an operation that
// arrives while another runs is told who holds the app, hears it again every
// waitReport, and runs once the first one ended.
func TestSecondOperationWaitsTellingWhoHoldsTheTurnThenRuns(t *testing.T) {
	ta := newTestApp(t, testConfig())
	ta.waitReport = 5 * time.Millisecond
	first := newBlocker()
	firstDone := hold(ta, first, true)
	var out syncBuf
	var mu sync.Mutex
	var order []string
	second := make(chan error, 1)
	go func() {
		second <- ta.do(context.Background(), &op{what: "second", pr: newProgress(&out), run: func(j *job) error {
			mu.Lock()
			order = append(order, "second")
			mu.Unlock()
			return nil
		}})
	}()
	waitUntil(t, "the still-waiting line", func() bool { return strings.Contains(out.String(), "still waiting: first (since ") })
	contains(t, "output", out.String(), "-----> Waiting for the deploy lock of hello: held by first (since ")
	mu.Lock()
	if len(order) != 0 {
		t.Fatal("the second operation ran while the first held the turn")
	}
	order = append(order, "first")
	mu.Unlock()
	close(first.release)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, " ") != "first second" {
		t.Fatalf("order %v", order)
	}
	if h := ta.holder(); h != "" {
		t.Fatalf("holder %q after both ended", h)
	}
}

// TestWaitingOperationGivesUpAfterTheLockTimeout: it fails with
// ErrLockTimeout naming the holder and the timeout, and never runs.
func TestWaitingOperationGivesUpAfterTheLockTimeout(t *testing.T) {
	ta := newTestApp(t, testConfig())
	ta.lockTimeout = 20 * time.Millisecond
	first := newBlocker()
	firstDone := hold(ta, first, true)
	ran := false
	err := ta.do(context.Background(), &op{what: "second", run: func(j *job) error { ran = true; return nil }})
	if !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("err %v, want ErrLockTimeout", err)
	}
	contains(t, "error", err.Error(), "another deploy is in progress: first (since ")
	contains(t, "error", err.Error(), "; gave up after 20ms")
	close(first.release)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	// One more operation runs after the first: the abandoned one did not.
	if err := ta.do(context.Background(), &op{what: "third", run: func(j *job) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	if ran {
		t.Fatal("the operation that gave up ran anyway")
	}
}

// TestClientLeavingWhileWaitingStopsWaitingOnly: the waiting operation
// returns its client's error and never runs; the running one carries on.
func TestClientLeavingWhileWaitingStopsWaitingOnly(t *testing.T) {
	ta := newTestApp(t, testConfig())
	first := newBlocker()
	firstDone := hold(ta, first, true)
	ctx, leave := context.WithCancel(context.Background())
	var out syncBuf
	second := make(chan error, 1)
	ran := make(chan struct{}, 1)
	go func() {
		second <- ta.do(ctx, &op{what: "second", pr: newProgress(&out), run: func(j *job) error { ran <- struct{}{}; return nil }})
	}()
	waitUntil(t, "the waiting line", func() bool { return strings.Contains(out.String(), "Waiting for the deploy lock") })
	leave()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	select {
	case err := <-firstDone:
		t.Fatalf("the running operation ended with its neighbour's client: %v", err)
	default:
	}
	close(first.release)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	if err := ta.do(context.Background(), &op{what: "third", run: func(j *job) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ran:
		t.Fatal("the abandoned operation ran")
	default:
	}
}

// TestCancelStopsTheRunningOperationAndSaysWhatItWas: cancel ends the
// operation's context with who cancelled it and answers the holder; with
// nothing cancelable running it says so.
func TestCancelStopsTheRunningOperationAndSaysWhatItWas(t *testing.T) {
	ta := newTestApp(t, testConfig())
	if _, err := ta.cancel("bob"); !errors.Is(err, ErrNothingToCancel) {
		t.Fatalf("cancel while idle: %v", err)
	}
	first := newBlocker()
	done := hold(ta, first, true)
	what, err := ta.cancel("bob")
	if err != nil || !strings.HasPrefix(what, "first (since ") {
		t.Fatalf("cancel: %q %v", what, err)
	}
	if err := <-done; err == nil || err.Error() != "stopped: bob" {
		t.Fatalf("the operation ended with %v, want stopped: bob", err)
	}
	if _, err := ta.cancel("bob"); !errors.Is(err, ErrNothingToCancel) {
		t.Fatalf("cancel after the end: %v", err)
	}

	cleanup := newBlocker()
	done = hold(ta, cleanup, false)
	if _, err := ta.cancel("bob"); !errors.Is(err, ErrNothingToCancel) {
		t.Fatalf("cancel of an operation that is not cancelable: %v", err)
	}
	close(cleanup.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestCloseCancelsWaitsDrainsAndTurnsAwayTheRest: close cancels the running
// operation and waits for it, fails the waiting ones with ErrClosed, stops
// every pool; later requests get ErrClosed or nothing to cancel.
func TestCloseCancelsWaitsDrainsAndTurnsAwayTheRest(t *testing.T) {
	ta := newTestApp(t, testConfig())
	blue := ta.withLive()
	first := newBlocker()
	firstDone := hold(ta, first, true)
	var out syncBuf
	second := make(chan error, 1)
	go func() {
		second <- ta.do(context.Background(), &op{what: "second", pr: newProgress(&out), run: func(j *job) error { return nil }})
	}()
	waitUntil(t, "the second to queue", func() bool { return strings.Contains(out.String(), "Waiting for the deploy lock") })
	closed := make(chan struct{})
	go func() { ta.close("shutdown"); close(closed) }()
	if err := <-firstDone; err == nil || err.Error() != "stopped: shutdown" {
		t.Fatalf("running operation: %v", err)
	}
	if err := <-second; !errors.Is(err, ErrClosed) {
		t.Fatalf("waiting operation: %v", err)
	}
	<-closed
	if !blue.isStopped() {
		t.Fatal("close left the live pool running")
	}
	if len(ta.pools()) != 0 {
		t.Fatalf("pools after close: %v", ta.pools())
	}
	if err := ta.do(context.Background(), &op{what: "late", run: func(j *job) error { return nil }}); !errors.Is(err, ErrClosed) {
		t.Fatalf("operation after close: %v", err)
	}
	if _, err := ta.cancel("bob"); !errors.Is(err, ErrNothingToCancel) {
		t.Fatalf("cancel after close: %v", err)
	}
	ta.close("again") // returns: closing twice is harmless
}

// TestStatusIsAnsweredWhileAnOperationRuns: status reads the published
// snapshot, so a deploy holding the app for minutes does not delay it.
func TestStatusIsAnsweredWhileAnOperationRuns(t *testing.T) {
	ta := newTestApp(t, testConfig())
	ta.withLive()
	first := newBlocker()
	done := hold(ta, first, true)
	got := make(chan Status, 1)
	go func() { got <- ta.App.status() }()
	select {
	case s := <-got:
		if s.Live != "v1" || len(s.Workers) != 2 || s.Branch != "main" {
			t.Fatalf("status %+v", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("status waited for the running operation")
	}
	close(first.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
