package deployer

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployer/deployer/releases"
)

// TestWatchRollsBackAReleaseThatTurnsUnhealthy: after a deploy with
// health.watch, watchFailures failed probes in a row of the live address
// put the previous release live again, by "health.watch", with the reason.
func TestWatchRollsBackAReleaseThatTurnsUnhealthy(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	probes := atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		if !healthy.Load() {
			http.Error(w, "sick", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	cfg := testConfig()
	cfg.Listen = []string{strings.TrimPrefix(srv.URL, "http://")}
	cfg.Health.HTTP = "/health"
	cfg.Health.Watch = time.Minute
	ta := newTestApp(t, cfg)
	ta.watchEvery = time.Millisecond
	ta.withLive()
	ta.repo.addCommit("c2", "second", "c1")
	rel := ta.addRelease("c2", releases.Building)
	var out syncBuf
	if err := ta.inTurn(&out, func(j *job) error {
		if _, err := j.goLive(rel, cutover{ref: branchRef("main"), from: "c1", to: "c2", previous: "v1", retireAs: releases.Retired}); err != nil {
			return err
		}
		j.startWatch(rel, "v1")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	contains(t, "output", out.String(), "Watching v2 for 1m0s: if it turns unhealthy, v1 goes live again")
	waitUntil(t, "healthy probes", func() bool { return probes.Load() >= 2 })
	if ta.current() != "v2" {
		t.Fatal("rolled back a healthy release")
	}
	healthy.Store(false)
	waitUntil(t, "the automatic rollback", func() bool {
		e := ta.store.LastEvent("rollback")
		return e != nil
	})
	e := ta.store.LastEvent("rollback")
	if e.Release != "v1" || e.From != "v2" || e.By != "health.watch" || !strings.HasPrefix(e.Detail, "health.watch: v2 failed 3 probes in a row: GET /health: HTTP 500") {
		t.Fatalf("ledger: %+v", e)
	}
	if ta.current() != "v1" || ta.repo.branch() != "c1" {
		t.Fatalf("current %s branch %s", ta.current(), ta.repo.branch())
	}
}
