package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// hangDaemon is warmDaemonWith a $MARK file.
func hangDaemon(t *testing.T, timeout string) (*daemon, *appRepo, string) {
	t.Helper()
	mark := filepath.Join(t.TempDir(), "mark")
	d, r := warmDaemonWith(t, timeout, mark)
	return d, r, mark
}

// pushHanging pushes v2, whose worker hangs on the warm-up, and returns
// once v2's worker took a warm-up request, with its pid.
func pushHanging(t *testing.T, d *daemon, r *appRepo, mark string) (int, chan string) {
	t.Helper()
	r.commit("v2 hangs on warm-up", map[string]string{"hang-on-warmup": ""})
	done := make(chan string, 1)
	go func() { out, _ := r.push(d.url(testToken)); done <- out }()
	var pid int
	testutil.WaitFor(t, 60*time.Second, "v2 to take a warm-up request", func() bool {
		b, err := os.ReadFile(mark)
		pid, _ = strconv.Atoi(string(b))
		return err == nil && pid > 0
	})
	return pid, done
}

func waitGone(t *testing.T, pid int, within time.Duration, what string) {
	t.Helper()
	testutil.WaitFor(t, within, what, func() bool { return !alive(pid) })
}

// TestKill9DuringTheWarmUpLeavesTheLiveReleaseLive: the next daemon keeps
// v1 live, stops the green worker the dead one left, and v2 is not live.
func TestKill9DuringTheWarmUpLeavesTheLiveReleaseLive(t *testing.T) {
	d, r, mark := hangDaemon(t, "20s")
	green, done := pushHanging(t, d, r, mark)
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	<-done
	d.start()
	if st := d.status(); st.Live != "v1" {
		t.Fatalf("live %q after kill -9 in the warm-up, want v1", st.Live)
	}
	waitGone(t, green, 15*time.Second, "the orphan green worker to be stopped")
}

// TestAGreenThatDoesNotAnswerItsWarmUpNeverGoesLive: every warm-up request
// to green hangs, so none is answered: the deploy fails before the
// cut-over and v1 stays live. A SIGTERM to the daemon meanwhile waits for
// that end (a graceful stop lets the deploy in flight finish), and the
// next daemon finds v1 live and green gone.
func TestAGreenThatDoesNotAnswerItsWarmUpNeverGoesLive(t *testing.T) {
	d, r, mark := hangDaemon(t, "6s")
	green, done := pushHanging(t, d, r, mark)
	syscall.Kill(d.pid(), syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon still running 60s after SIGTERM in the warm-up")
	}
	out := <-done
	if !strings.Contains(out, "warm-up requests answered 2xx (first failure:") || !strings.Contains(out, "the live release is unchanged") {
		t.Fatalf("the push does not fail on the unanswered warm-up:\n%s", out)
	}
	if alive(green) {
		t.Errorf("green worker %d outlived the failed deploy", green)
	}
	d.start()
	if st := d.status(); st.Live != "v1" {
		t.Fatalf("live %q after a warm-up nobody answered, want v1\n%s", st.Live, out)
	}
}

// TestRollbackAndReloadWarmUpToo: rollback and reload go through the
// warm-up as a push does.
func TestRollbackAndReloadWarmUpToo(t *testing.T) {
	d, r := warmDaemon(t)
	r.commit("v2", nil)
	r.mustPush(d)
	if out := d.mustCLI("rollback", "hello"); !strings.Contains(out, "Warm-up: 50 GET /healthz") {
		t.Errorf("rollback did not warm up:\n%s", out)
	}
	if out := d.mustCLI("reload", "hello"); !strings.Contains(out, "Warm-up: 50 GET /healthz") {
		t.Errorf("reload did not warm up:\n%s", out)
	}
}

// TestCancelEndsTheWarmUp: deployer cancel during the warm-up fails the
// deploy at once, v1 stays live and green stops.
func TestCancelEndsTheWarmUp(t *testing.T) {
	d, r, mark := hangDaemon(t, "30s")
	green, done := pushHanging(t, d, r, mark)
	d.mustCLI("cancel", "hello")
	out := <-done
	if st := d.status(); st.Live != "v1" {
		t.Fatalf("live %q after cancel in the warm-up, want v1\n%s", st.Live, out)
	}
	waitGone(t, green, 15*time.Second, "the green worker to stop")
}
