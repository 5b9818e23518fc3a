package deployer

import (
	"errors"
	"slices"
	"testing"

	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

// TestGoLiveFailureStopsGreenAndLeavesBlueCurrentAndBranch: whatever step
// of goLive fails, green is stopped, blue keeps serving as the live pool,
// current and the deploy branch name what they named, and the new release
// is not marked live.
func TestGoLiveFailureStopsGreenAndLeavesBlueCurrentAndBranch(t *testing.T) {
	for _, c := range []struct {
		name   string
		step   string
		inject func(ta *testApp)
		is     error
	}{
		{"preflight fails", "preflight", func(ta *testApp) {
			ta.starter.set(func(s *fakeStarter) { s.preflightErr = errInjected })
		}, errInjected},
		{"green fails", "green", func(ta *testApp) {
			ta.starter.set(func(s *fakeStarter) { s.startErr = supervisor.ErrNotUp })
		}, supervisor.ErrNotUp},
		{"branch moved under the deploy", "cut-over", func(ta *testApp) {
			ta.repo.addCommit("other", "pushed around the deployer", "c1")
			ta.repo.mu.Lock()
			ta.repo.refs[branchRef("main")] = "other"
			ta.repo.mu.Unlock()
		}, ErrRefMoved},
		{"current swap fails", "cut-over", func(ta *testApp) {
			ta.store.fail(func(s *faultyStore) { s.setCurrentErr = errInjected })
		}, errInjected},
		{"live metadata save fails", "cut-over", func(ta *testApp) {
			ta.store.fail(func(s *faultyStore) {
				s.saveErr = func(r *releases.Release) error {
					if r.Status == releases.Live {
						return errInjected
					}
					return nil
				}
			})
		}, errInjected},
	} {
		t.Run(c.name, func(t *testing.T) {
			ta := newTestApp(t, testConfig())
			blue := ta.withLive()
			ta.repo.addCommit("c2", "second", "c1")
			green := ta.addRelease("c2", releases.Building)
			c.inject(ta)
			branchBefore := ta.repo.branch()
			var lt liveTimes
			err := ta.inTurn(nil, func(j *job) error {
				var err error
				lt, err = j.goLive(green, cutover{ref: branchRef("main"), from: "c1", to: "c2", previous: "v1", retireAs: releases.Retired})
				return err
			})
			if !errors.Is(err, c.is) {
				t.Fatalf("goLive: %v, want %v", err, c.is)
			}
			if lt.step != c.step {
				t.Fatalf("failed at %q, want %q", lt.step, c.step)
			}
			if p := ta.starter.last(); p != blue && !p.isStopped() {
				t.Fatal("green was left running")
			}
			if blue.isStopped() {
				t.Fatal("blue was stopped")
			}
			if pools := ta.pools(); len(pools) != 1 || pools[0] != blue {
				t.Fatalf("pools %v, want blue alone", pools)
			}
			if cur := ta.current(); cur != "v1" {
				t.Fatalf("current %s, want v1", cur)
			}
			if b := ta.repo.branch(); b != branchBefore {
				t.Fatalf("branch %s, want %s", b, branchBefore)
			}
			if st := ta.status(green.ID); st == releases.Live {
				t.Fatal("the failed release is marked live")
			}
			if st := ta.status("v1"); st != releases.Live {
				t.Fatalf("v1 is %s, want live", st)
			}
		})
	}
}

// TestGoLiveOfTheFirstReleaseUndoesCurrentWhenItsSaveFails: with nothing
// live before, an incomplete cut-over removes the current link it made.
func TestGoLiveOfTheFirstReleaseUndoesCurrentWhenItsSaveFails(t *testing.T) {
	ta := newTestApp(t, testConfig())
	ta.repo.addCommit("c1", "first")
	rel := ta.addRelease("c1", releases.Building)
	ta.store.fail(func(s *faultyStore) {
		s.saveErr = func(r *releases.Release) error {
			if r.Status == releases.Live {
				return errInjected
			}
			return nil
		}
	})
	err := ta.inTurn(nil, func(j *job) error {
		_, err := j.goLive(rel, cutover{ref: branchRef("main"), from: ZeroRev, to: "c1"})
		return err
	})
	if !errors.Is(err, errInjected) {
		t.Fatalf("goLive: %v", err)
	}
	if _, err := ta.store.Current(); !errors.Is(err, releases.ErrNoCurrent) {
		t.Fatalf("current after an undone first cut-over: %v", err)
	}
	if _, err := ta.repo.Resolve(branchRef("main")); err == nil {
		t.Fatal("the branch was created")
	}
	if !ta.starter.last().isStopped() {
		t.Fatal("green was left running")
	}
	contains(t, "log", ta.logs.String(), "level=ERROR msg=\"release metadata not saved\"")
}

// TestGoLiveSwapsGreenInAndDrainsBlue: on success the branch and current
// move, the new release is live and the previous one retired, green is the
// live pool, and blue, which drains in the background, is stopped and then
// no longer listed.
func TestGoLiveSwapsGreenInAndDrainsBlue(t *testing.T) {
	ta := newTestApp(t, testConfig())
	blue := ta.withLive()
	ta.repo.addCommit("c2", "second", "c1")
	rel := ta.addRelease("c2", releases.Building)
	var out syncBuf
	err := ta.inTurn(&out, func(j *job) error {
		_, err := j.goLive(rel, cutover{ref: branchRef("main"), from: "c1", to: "c2", previous: "v1", retireAs: releases.Retired})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	green := ta.starter.last()
	if green == blue || green.isStopped() {
		t.Fatalf("green stopped %v", green.isStopped())
	}
	waitUntil(t, "blue to be stopped and unlisted", func() bool {
		return blue.isStopped() && slices.Equal(ta.pools(), []pool{green})
	})
	if ta.current() != rel.ID || ta.repo.branch() != "c2" {
		t.Fatalf("current %s branch %s", ta.current(), ta.repo.branch())
	}
	if ta.status(rel.ID) != releases.Live || ta.status("v1") != releases.Retired {
		t.Fatalf("statuses %s %s", ta.status(rel.ID), ta.status("v1"))
	}
	if ta.starter.preflights != 1 {
		t.Fatalf("%d preflights", ta.starter.preflights)
	}
	contains(t, "output", out.String(), "Cut-over: v2 is live, v1 retired")
}

// TestTheLedgerRecordsTheChangeBeforeBlueDrains: the deploy, rollback or
// reload line is in history.jsonl by the time blue starts draining, so a
// crash during the drain (up to drain_timeout) does not lose it.
func TestTheLedgerRecordsTheChangeBeforeBlueDrains(t *testing.T) {
	ta := newTestApp(t, testConfig())
	blue := ta.withLive()
	var atDrain *releases.Event
	blue.onStop = func() { atDrain = ta.store.LastEvent("reload") }
	rel := ta.addRelease("c1", releases.Live)
	err := ta.inTurn(nil, func(j *job) error {
		_, err := j.goLive(rel, cutover{previous: rel.ID,
			event: &releases.Event{Event: "reload", Release: rel.ID, By: "test"}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "blue to be retired", blue.isStopped)
	if atDrain == nil || atDrain.Release != rel.ID || atDrain.By != "test" {
		t.Fatalf("when blue began to drain, the ledger's last reload was %+v", atDrain)
	}
}

// TestWarmConnLifeIsAQuarterOfAConnectionsShareWithinItsBounds: for a
// warm-up of n per worker, a connection carries from 25 to 250 requests,
// a quarter of its share (n / warmConns) where that is within them, so a
// connection is replaced at least 3 times from 400 per worker on; at 100
// or fewer, none is replaced before the warm-up ends.
func TestWarmConnLifeIsAQuarterOfAConnectionsShareWithinItsBounds(t *testing.T) {
	for _, c := range []struct{ n, life int }{
		{0, 25}, {1, 25}, {100, 25}, {400, 25}, {1000, 62}, {3000, 187}, {4000, 250}, {10000, 250}, {1000000, 250},
	} {
		if got := warmConnLife(c.n); got != c.life {
			t.Errorf("warmConnLife(%d) = %d; want %d", c.n, got, c.life)
		}
	}
	for n := 1; n <= 1000000; n = n*3/2 + 1 {
		share, life := n/warmConns, warmConnLife(n)
		if life < minConnLife || life > maxConnLife {
			t.Errorf("warmConnLife(%d) = %d: not within %d-%d", n, life, minConnLife, maxConnLife)
		}
		if n >= 400 && share/life < 4 {
			t.Errorf("warmConnLife(%d) = %d: a connection's share of %d has %d lives; want at least 4", n, life, share, share/life)
		}
		if n <= 100 && share > life {
			t.Errorf("warmConnLife(%d) = %d: a connection's share of %d is replaced", n, life, share)
		}
	}
}
