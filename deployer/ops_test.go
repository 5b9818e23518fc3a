package deployer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer/deployer/releases"
)

// TestRollbackGoesLiveWithoutRebuildAndMovesTheBranchBack: the previous
// good release goes live through the gate with what it ran with, the branch
// names its revision, the one it replaced is rolled-back, the ledger says so.
func TestRollbackGoesLiveWithoutRebuildAndMovesTheBranchBack(t *testing.T) {
	ta := newTestApp(t, testConfig())
	ta.withLive()
	ta.repo.addCommit("c2", "second", "c1")
	ta.addRelease("c2", releases.Building)
	if err := ta.inTurn(nil, func(j *job) error {
		rel, _ := j.store.Get("v2")
		_, err := j.goLive(rel, cutover{ref: branchRef("main"), from: "c1", to: "c2", previous: "v1", retireAs: releases.Retired})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	v2 := ta.starter.last()
	var out syncBuf
	if err := ta.rollback(context.Background(), "", "bob", &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if ta.current() != "v1" || ta.repo.branch() != "c1" {
		t.Fatalf("current %s branch %s", ta.current(), ta.repo.branch())
	}
	if ta.status("v2") != releases.RolledBack || ta.status("v1") != releases.Live {
		t.Fatalf("v1 %s v2 %s", ta.status("v1"), ta.status("v2"))
	}
	if ta.starter.last().Release() != "v1" {
		t.Fatal("v1's pool did not replace v2's")
	}
	waitUntil(t, "v2's pool to drain", v2.isStopped)
	if e := ta.store.LastEvent("rollback"); e == nil || e.Release != "v1" || e.From != "v2" || e.By != "bob" {
		t.Fatalf("ledger: %+v", e)
	}
	contains(t, "output", out.String(), "Rolling back hello from v2 to v1 (c1: msg c1), no rebuild")
}

// TestRollbackRefusesTargetsThatCannotGoLive.
func TestRollbackRefusesTargetsThatCannotGoLive(t *testing.T) {
	ta := newTestApp(t, testConfig())
	if err := ta.rollback(context.Background(), "", "bob", nil); !errors.Is(err, ErrNotLive) {
		t.Fatalf("nothing live: %v", err)
	}
	ta.withLive()
	if err := ta.rollback(context.Background(), "", "bob", nil); !errors.Is(err, ErrNoTarget) {
		t.Fatalf("no older release: %v", err)
	}
	failed := ta.addRelease("c1", releases.Failed)
	pruned := ta.addRelease("c1", releases.Pruned)
	gone := ta.addRelease("c1", releases.Retired)
	os.RemoveAll(ta.store.Dir(gone.ID))
	for to, want := range map[string]string{
		"1":       "rollback: v1 is already live",
		failed.ID: "rollback: v2 failed",
		pruned.ID: "rollback: v3 is pruned",
		gone.ID:   "rollback: v4 is not on disk",
		"v9":      "rollback: v9: release not found",
	} {
		err := ta.rollback(context.Background(), to, "bob", nil)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("rollback to %s: %v, want %q", to, err, want)
		}
	}
	if ta.current() != "v1" || ta.starter.last().isStopped() {
		t.Fatal("a refused rollback changed what is live")
	}
}

// TestRollbackThatFailsTheGateKeepsTheLiveRelease.
func TestRollbackThatFailsTheGateKeepsTheLiveRelease(t *testing.T) {
	ta := newTestApp(t, testConfig())
	ta.repo.addCommit("c0", "zero")
	ta.addRelease("c0", releases.Retired)
	ta.repo.addCommit("c1", "first", "c0")
	ta.repo.refs[branchRef("main")] = "c1"
	live := ta.addRelease("c1", releases.Live)
	ta.store.SetCurrent(live.ID)
	if err := ta.resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	blue := ta.starter.last()
	ta.starter.set(func(s *fakeStarter) { s.preflightErr = errInjected })
	var out syncBuf
	err := ta.rollback(context.Background(), "", "bob", &out)
	if !errors.Is(err, errInjected) || !strings.HasPrefix(err.Error(), "preflight: ") {
		t.Fatalf("err %v", err)
	}
	if ta.current() != "v2" || ta.repo.branch() != "c1" || blue.isStopped() {
		t.Fatal("a failed rollback changed what is live")
	}
	if e := ta.store.LastEvent("failure"); e == nil || !strings.HasPrefix(e.Detail, "rollback to v1 refused at preflight") {
		t.Fatalf("ledger: %+v", e)
	} else if _, ok := e.Phases["preflight"]; !ok || len(e.Phases) != 1 || e.Of != "rollback" {
		t.Fatalf("the failure has not the steps that ran (preflight only): %+v", e)
	}
	contains(t, "output", out.String(), "v2 is still live")
}

// TestReloadStartsFreshWorkersWithTheCurrentConfig: same release, a new pool
// with the configured workers and env; the old pool is stopped; the branch
// is not touched. A failed reload keeps the old workers.
func TestReloadStartsFreshWorkersWithTheCurrentConfig(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 3
	cfg.Env = map[string]string{"MODE": "fresh"}
	ta := newTestApp(t, cfg)
	if err := ta.reload(context.Background(), "bob", nil); !errors.Is(err, ErrNotLive) {
		t.Fatalf("reload with nothing live: %v", err)
	}
	old := ta.withLive()
	if err := ta.reload(context.Background(), "bob", nil); err != nil {
		t.Fatal(err)
	}
	fresh := ta.starter.last()
	if fresh == old || fresh.spec.Workers != 3 || fresh.spec.Env["MODE"] != "fresh" {
		t.Fatalf("fresh pool %+v", fresh.spec)
	}
	waitUntil(t, "the old pool to drain", old.isStopped)
	if ta.repo.updates != 0 || ta.current() != "v1" {
		t.Fatal("reload moved the branch or current")
	}
	ta.starter.set(func(s *fakeStarter) { s.startErr = errInjected })
	if err := ta.reload(context.Background(), "bob", nil); !errors.Is(err, errInjected) {
		t.Fatalf("failing reload: %v", err)
	}
	if fresh.isStopped() {
		t.Fatal("a failed reload stopped the serving workers")
	}
	if e := ta.store.LastEvent("failure", "reload"); e == nil || e.Event != "failure" {
		t.Fatalf("ledger: %+v", e)
	}
}

// TestCleanupPrunesByTheRulesAndRecordsIt: a dry run removes nothing; a
// real one prunes what the plan says, never the live release or one a pool
// runs, and records it. A ledger failure is the cleanup's error.
func TestCleanupPrunesByTheRulesAndRecordsIt(t *testing.T) {
	ta := newTestApp(t, testConfig())
	ta.withLive()
	for i := 0; i < 3; i++ {
		ta.addRelease("c1", releases.Retired)
	}
	res, err := ta.cleanup(context.Background(), 1, true, "bob")
	if err != nil || !res.DryRun || strings.Join(res.Pruned, " ") != "v3 v2" {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	if ta.status("v2") != releases.Retired {
		t.Fatal("the dry run pruned")
	}
	res, err = ta.cleanup(context.Background(), 1, false, "bob")
	if err != nil || strings.Join(res.Pruned, " ") != "v3 v2" {
		t.Fatalf("cleanup: %+v %v", res, err)
	}
	if ta.status("v2") != releases.Pruned || ta.status("v1") != releases.Live {
		t.Fatalf("v1 %s v2 %s", ta.status("v1"), ta.status("v2"))
	}
	if e := ta.store.LastEvent("cleanup"); e == nil || !strings.HasPrefix(e.Detail, "pruned v3 v2") {
		t.Fatalf("ledger: %+v", e)
	}
	ta.addRelease("c1", releases.Retired)
	ta.addRelease("c1", releases.Retired)
	ta.store.fail(func(s *faultyStore) { s.recordErr = errInjected })
	// keep_releases is 5: nothing to prune, so nothing to record.
	if _, err := ta.cleanup(context.Background(), -1, false, "bob"); err != nil {
		t.Fatalf("cleanup with nothing to prune: %v", err)
	}
	if _, err := ta.cleanup(context.Background(), 1, false, "bob"); !errors.Is(err, errInjected) {
		t.Fatalf("cleanup whose ledger write fails: %v", err)
	}
}

// TestDeployRevDeploysTheBranchHeadOrARevision.
func TestDeployRevDeploysTheBranchHeadOrARevision(t *testing.T) {
	ta, w := newGitApp(t, func(cfg *testAppConfig) { cfg.Start = "./run" })
	one := w.commit("one", map[string]string{"a": "1"})
	if err := ta.deployRev(context.Background(), one[:8], "bob", false, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := w.bare.Resolve(branchRef("main")); b != one {
		t.Fatalf("branch %s", b)
	}
	if err := ta.deployRev(context.Background(), "", "bob", false, nil); err != nil {
		t.Fatal(err)
	}
	if rel, _ := ta.store.Get("v2"); rel.Revision != one || rel.Pusher != "bob" {
		t.Fatalf("v2: %+v", rel)
	}
	if err := ta.deployRev(context.Background(), "nosuch", "bob", false, nil); err == nil {
		t.Fatal("deployed an unknown revision")
	}
}

// TestDeployRevAfterAFailedFirstPushDeploysItsRevision: a first push that
// failed leaves no branch; deploy with no revision then deploys the last
// one pushed (the fix was outside the repository), and with none pushed
// says how to go on.
func TestDeployRevAfterAFailedFirstPushDeploysItsRevision(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "fixed")
	ta, w := newGitApp(t, func(cfg *testAppConfig) { cfg.Start = "./run"; cfg.Build = "test -f " + flag })
	if err := ta.deployRev(context.Background(), "", "bob", false, nil); err == nil ||
		!strings.Contains(err.Error(), "main has no revision to deploy yet: push one, or name it: deployer deploy") {
		t.Fatalf("deploy with nothing pushed: %v", err)
	}
	one := w.commit("one", map[string]string{"a": "1"})
	if err := ta.push(w, one, nil); err == nil {
		t.Fatal("the first push deployed with its build failing")
	}
	if _, err := w.bare.Resolve(branchRef("main")); err == nil {
		t.Fatal("a failed first push made the branch")
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := ta.deployRev(context.Background(), "", "bob", false, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if rel, _ := ta.store.Get("v2"); rel.Revision != one || rel.Status != releases.Live {
		t.Fatalf("v2: %+v", rel)
	}
	if !strings.Contains(out.String(), "main was never deployed; deploying the last revision pushed to it, "+one[:7]+" (v1, failed)") {
		t.Fatalf("output:\n%s", out.String())
	}
}
