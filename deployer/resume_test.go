package deployer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

// TestResumeRepairsWhatACrashLeftThenServesTheLiveRelease: a release left
// building is failed and its tree removed, a stale live one retired, the
// current one marked live, the branch moved back to its revision; then its
// pool starts with the configured workers.
func TestResumeRepairsWhatACrashLeftThenServesTheLiveRelease(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 4
	ta := newTestApp(t, cfg)
	ta.repo.addCommit("c1", "one")
	ta.repo.addCommit("c2", "two", "c1")
	ta.repo.addCommit("c3", "three", "c2")
	stale := ta.addRelease("c1", releases.Live)
	cur := ta.addRelease("c2", releases.Building) // crashed after the current switch
	half := ta.addRelease("c3", releases.Building)
	os.WriteFile(filepath.Join(ta.store.Dir(half.ID), "partial"), nil, 0o644)
	ta.store.SetCurrent(cur.ID)
	ta.repo.refs[branchRef("main")] = "c3" // crashed after the branch moved
	if err := ta.resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]releases.Status{stale.ID: releases.Retired, cur.ID: releases.Live, half.ID: releases.Failed} {
		if got := ta.status(id); got != want {
			t.Fatalf("%s is %s, want %s", id, got, want)
		}
	}
	if _, err := os.Stat(ta.store.Dir(half.ID)); !os.IsNotExist(err) {
		t.Fatalf("the half-built tree is still there: %v", err)
	}
	if ta.repo.branch() != "c2" {
		t.Fatalf("branch %s, want the live c2", ta.repo.branch())
	}
	p := ta.starter.last()
	if p.Release() != cur.ID || p.spec.Workers != 4 || ta.pools()[0] != p {
		t.Fatalf("pool %+v", p.spec)
	}
	if e := ta.store.LastEvent("recover"); e == nil {
		t.Fatal("the repair was not recorded")
	}
}

// TestResumeWithNothingLiveStartsNothing.
func TestResumeWithNothingLiveStartsNothing(t *testing.T) {
	ta := newTestApp(t, testConfig())
	if err := ta.resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ta.starter.last() != nil || len(ta.pools()) != 0 {
		t.Fatal("a pool started with nothing live")
	}
}

// TestResumeFallsBackToThePreviousGoodReleaseWhenTheLiveOneWillNotStart,
// moving the branch and recording a rollback; with no previous release the
// start's error is returned.
func TestResumeFallsBackToThePreviousGoodReleaseWhenTheLiveOneWillNotStart(t *testing.T) {
	ta := newTestApp(t, testConfig())
	ta.repo.addCommit("c1", "one")
	ta.repo.addCommit("c2", "two", "c1")
	ta.addRelease("c1", releases.Retired)
	cur := ta.addRelease("c2", releases.Live)
	ta.store.SetCurrent(cur.ID)
	ta.repo.refs[branchRef("main")] = "c2"
	fails := &failFirst{fakeStarter: ta.starter}
	ta.App.starter = fails
	if err := ta.resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ta.current() != "v1" || ta.repo.branch() != "c1" || ta.status("v2") != releases.RolledBack {
		t.Fatalf("current %s branch %s v2 %s", ta.current(), ta.repo.branch(), ta.status("v2"))
	}
	if e := ta.store.LastEvent("rollback"); e == nil || e.Release != "v1" || e.By != "deployer" {
		t.Fatalf("ledger: %+v", e)
	}

	lone := newTestApp(t, testConfig())
	lone.repo.addCommit("c1", "one")
	rel := lone.addRelease("c1", releases.Live)
	lone.store.SetCurrent(rel.ID)
	lone.starter.set(func(s *fakeStarter) { s.startErr = errInjected })
	if err := lone.resume(context.Background()); !errors.Is(err, errInjected) {
		t.Fatalf("resume with nothing to fall back to: %v", err)
	}
}

// failFirst fails the first pool it starts, as a live release that crashes.
type failFirst struct {
	*fakeStarter
	failed bool
}

func (f *failFirst) NewPool(spec supervisor.PoolSpec) pool {
	p := f.fakeStarter.NewPool(spec).(*fakePool)
	if !f.failed {
		f.failed = true
		p.upErr = errInjected
	}
	return p
}
