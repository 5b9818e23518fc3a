package deployer

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

func (ta *testApp) workersFile() []poolRecord {
	ta.t.Helper()
	b, err := os.ReadFile(ta.App.workersFile())
	if err != nil {
		ta.t.Fatal(err)
	}
	var recs []poolRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		ta.t.Fatal(err)
	}
	return recs
}

func roles(recs []poolRecord) string {
	s := ""
	for _, r := range recs {
		s += r.Release + ":" + r.Role + " "
	}
	return s
}

// TestWorkersFileFollowsEveryChangeOfThePools: the live pool is saved once
// started, a green pool while it starts, after the cut-over green, now
// live, beside blue draining, and once blue has drained green alone.
func TestWorkersFileFollowsEveryChangeOfThePools(t *testing.T) {
	ta := newTestApp(t, testConfig())
	ta.withLive()
	if got := roles(ta.workersFile()); got != "v1:live " {
		t.Fatalf("after the start: %s", got)
	}
	hold := make(chan struct{})
	ta.starter.set(func(s *fakeStarter) { s.hold = hold })
	ta.repo.addCommit("c2", "second", "c1")
	rel := ta.addRelease("c2", releases.Building)
	res := make(chan error, 1)
	go func() {
		res <- ta.inTurn(nil, func(j *job) error {
			_, err := j.goLive(rel, cutover{ref: branchRef("main"), from: "c1", to: "c2", previous: "v1", retireAs: releases.Retired})
			return err
		})
	}()
	waitUntil(t, "green in workers.json", func() bool { return roles(ta.workersFile()) == "v1:live v2:green " })
	if recs := ta.workersFile(); len(recs[1].Workers) != 2 || recs[1].Workers[1].PID != 1001 {
		t.Fatalf("green's workers: %+v", recs[1].Workers)
	}
	close(hold)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	if got := roles(ta.workersFile()); got != "v2:live " && got != "v2:live v1:draining " {
		t.Fatalf("after the cut-over: %s", got)
	}
	waitUntil(t, "blue's drain to end in workers.json", func() bool { return roles(ta.workersFile()) == "v2:live " })
}

// TestResumeAdoptsTheRecordedLivePoolAndRetiresTheRest: the pool recorded
// for the current release becomes live without starting a worker; a green
// pool of a release left building is stopped before the repair; an old
// draining pool is retired in the background.
func TestResumeAdoptsTheRecordedLivePoolAndRetiresTheRest(t *testing.T) {
	ta := newTestApp(t, testConfig())
	ta.repo.addCommit("c1", "one")
	ta.repo.addCommit("c2", "two", "c1")
	ta.repo.refs[branchRef("main")] = "c2"
	old := ta.addRelease("c1", releases.Retired)
	live := ta.addRelease("c2", releases.Live)
	half := ta.addRelease("c2", releases.Building)
	ta.store.SetCurrent(live.ID)
	rec := func(pids ...int) []supervisor.WorkerRecord {
		var out []supervisor.WorkerRecord
		for i, pid := range pids {
			out = append(out, supervisor.WorkerRecord{Index: i, PID: pid})
		}
		return out
	}
	b, _ := json.Marshal([]poolRecord{
		{Release: old.ID, Role: roleDraining, Workers: rec(7)},
		{Release: half.ID, Role: roleGreen, Workers: rec(8, 9)},
		{Release: live.ID, Role: roleLive, Workers: rec(5, 6)},
	})
	os.WriteFile(ta.App.workersFile(), b, 0o600)
	if err := ta.resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	pools := map[string]*fakePool{}
	for _, p := range ta.starter.pools {
		if p.adopted == nil {
			t.Fatalf("resume started a pool of %s", p.Release())
		}
		pools[p.Release()] = p
	}
	if p := pools[live.ID]; p.isStopped() || ta.pools()[0] != p {
		t.Fatal("the live pool was not adopted")
	}
	if !pools[half.ID].isStopped() || ta.status(half.ID) != releases.Failed {
		t.Fatal("the green pool of the interrupted deploy still runs")
	}
	waitUntil(t, "the old pool to drain", func() bool { return pools[old.ID].isStopped() && len(ta.pools()) == 1 })
	if got := roles(ta.workersFile()); got != "v2:live " {
		t.Fatalf("workers.json: %s", got)
	}
}

// TestDetachWaitsForTheOperationAndLetsTheWorkersGo: detach does not cancel
// the running operation; it lets go of the pools without stopping them,
// leaves them in workers.json and turns away later operations.
func TestDetachWaitsForTheOperationAndLetsTheWorkersGo(t *testing.T) {
	ta := newTestApp(t, testConfig())
	ta.withSockets("127.0.0.1:0")
	blue := ta.withLive()
	b := newBlocker()
	done := hold(ta, b, true)
	detached := make(chan struct{})
	go func() { ta.detach(); close(detached) }()
	select {
	case <-detached:
		t.Fatal("detach did not wait for the running operation")
	case err := <-done:
		t.Fatalf("detach cancelled the running operation: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(b.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-detached
	if blue.isStopped() || !blue.detached.Load() {
		t.Fatal("the live pool was stopped rather than let go")
	}
	if got := roles(ta.workersFile()); got != "v1:live " {
		t.Fatalf("workers.json: %s", got)
	}
	if err := ta.inTurn(nil, func(j *job) error { return nil }); err == nil {
		t.Fatal("an operation ran after detach")
	}
}

// TestTheAdoptedPoolIsInWorkersFileFromTheStart: while a daemon starts, the
// pool it adopts to stay live is in workers.json from the first save on
// (here the one the retiring of another pool makes), before it is made
// live: a second kill -9 during the start leaves the next daemon able to
// adopt it.
func TestTheAdoptedPoolIsInWorkersFileFromTheStart(t *testing.T) {
	ta := newTestApp(t, testConfig())
	ta.repo.addCommit("c1", "one")
	ta.repo.addCommit("c2", "two", "c1")
	ta.repo.refs[branchRef("main")] = "c2"
	old := ta.addRelease("c1", releases.Retired)
	live := ta.addRelease("c2", releases.Live)
	ta.store.SetCurrent(live.ID)
	b, _ := json.Marshal([]poolRecord{
		{Release: old.ID, Role: roleDraining, Workers: []supervisor.WorkerRecord{{Index: 0, PID: 7}}},
		{Release: live.ID, Role: roleLive, Workers: []supervisor.WorkerRecord{{Index: 0, PID: 5}}},
	})
	os.WriteFile(ta.App.workersFile(), b, 0o600)
	err := ta.inTurn(nil, func(j *job) error {
		if j.adopt(live.ID) == nil {
			t.Error("nothing adopted")
		}
		// The old pool drains (fakes stop at once) and each change is saved.
		waitUntil(t, "the old pool's drain saved", func() bool { return !strings.Contains(roles(ta.workersFile()), old.ID+":") })
		if got := roles(ta.workersFile()); !strings.Contains(got, live.ID+":") {
			t.Errorf("workers.json during the start: %q", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
