package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// withMain returns the example's main.go with old replaced by new.
func withMain(t *testing.T, r *appRepo, old, new string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), old, new, 1)
	if s == string(b) {
		t.Fatalf("main.go has no %q", old)
	}
	return s
}

// TestNotifyLateReadyIsNotPromotedEarly: with health.notify, a release whose
// workers hold back READY=1 stays out of service — v1 keeps serving — until
// they send it.
func TestNotifyLateReadyIsNotPromotedEarly(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "ready")
	d := newDaemon(t, "    health: {http: /healthz, notify: true, min_uptime: 300ms, timeout: 60s}\n")
	r := newAppRepo(t)
	r.mustPush(d)
	d.serves("v1")
	slow := withMain(t, r, "if err := worker.ServeAll(", `for {
		if _, err := os.Stat("`+gate+`"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := worker.ServeAll(`)
	slow = strings.Replace(slow, `"strings"`, `"strings"
	"time"`, 1)
	r.commit("late ready", map[string]string{"main.go": slow})
	pushed := make(chan error, 1)
	go func() { _, err := r.push(d.url(testToken)); pushed <- err }()
	v2 := filepath.Join(d.dir, "data/apps/hello/releases/v2")
	testutil.WaitFor(t, 60*time.Second, "a v2 worker to run", func() bool {
		procs, _ := filepath.Glob("/proc/[0-9]*/cwd")
		for _, p := range procs {
			if cwd, _ := os.Readlink(p); cwd == v2 {
				return true
			}
		}
		return false
	})
	// Well past min_uptime, v2 has not said READY=1: it must not be live.
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if st := d.status(); st.Live != "v1" {
			t.Fatalf("v2 promoted before READY=1: %+v", st)
		}
		d.serves("v1")
	}
	os.WriteFile(gate, nil, 0o644)
	if err := <-pushed; err != nil {
		t.Fatalf("push: %v\n%s", err, d.log)
	}
	d.serves("v2")
}

// TestWatchRollsBackAReleaseThatTurnsUnhealthy: v2 passes every gate, then
// its health check starts failing after cut-over; health.watch rolls back
// to v1 by itself and records why.
func TestWatchRollsBackAReleaseThatTurnsUnhealthy(t *testing.T) {
	d := newDaemon(t, "    health: {http: /healthz, min_uptime: 300ms, timeout: 30s, watch: 60s}\n")
	r := newAppRepo(t)
	rev1 := r.git("rev-parse", "HEAD")
	r.mustPush(d)
	fragile := withMain(t, r, `fmt.Fprintln(w, "ok")`, `if _, err := os.Stat("sick"); err == nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")`)
	r.commit("fragile", map[string]string{"main.go": fragile})
	out := r.mustPush(d)
	if !strings.Contains(out, "Watching v2 for 1m0s") {
		t.Fatalf("push output does not mention the watch:\n%s", out)
	}
	d.serves("v2")
	os.WriteFile(filepath.Join(d.dir, "data/apps/hello/releases/v2/sick"), nil, 0o644)
	testutil.WaitFor(t, 30*time.Second, "the automatic rollback", func() bool {
		st := d.status()
		return st.Live == "v1" && len(st.Workers) == 2 && st.Workers[0].Release == "v1" && st.Workers[1].Release == "v1"
	})
	d.serves("v1")
	if d.branch() != rev1 {
		t.Fatal("the automatic rollback did not move the branch back")
	}
	hist, _ := os.ReadFile(filepath.Join(d.dir, "data/apps/hello/history.jsonl"))
	if !strings.Contains(string(hist), `"event":"rollback","release":"v1","from":"v2","by":"health.watch"`) ||
		!strings.Contains(string(hist), "HTTP 500") {
		t.Fatalf("history does not record the automatic rollback and why:\n%s", hist)
	}
	if st := d.release("v2")["status"]; st != "rolled-back" {
		t.Fatalf("v2 status %v", st)
	}
}
