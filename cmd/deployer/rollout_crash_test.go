package main

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// The rollout crash tests: a daemon of a three-host fleet is killed with
// SIGKILL (or restarted) at each step of a rollout from web1, and then
// every host must be consistent on its own (it serves a complete release,
// and its current link, its deploy branch and its live release agree), no
// shipped release may stay building once its host restarts or the next
// push arrives, `status --fleet` must tell the split as it is, and the
// next push must bring the three hosts to one release with byte-identical
// trees.

// kill is kill -9 of the daemon: its workers live on.
func (d *daemon) kill() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		d.t.Fatal(err)
	}
	<-d.exited
}

// restart starts the daemon again after kill or stop, and waits until it
// has recovered its disk: nothing left building, and the release current
// names is the one status calls live.
func (d *daemon) restart() {
	d.t.Helper()
	d.start()
	testutil.WaitFor(d.t, 60*time.Second, "the restarted daemon to recover "+d.dir, func() bool {
		cur := d.current()
		for id, st := range d.statuses() {
			if st == "building" || (st == "live") != (id == cur) {
				return false
			}
		}
		return d.status().Live == cur
	})
}

// reconfig stops the daemon, replaces old (which must be there) by new in
// its config, and starts it again.
func (d *daemon) reconfig(old, new string) {
	d.t.Helper()
	d.stop()
	b, err := os.ReadFile(d.config)
	if err != nil || !strings.Contains(string(b), old) {
		d.t.Fatalf("no %q in the config: %v\n%s", old, err, b)
	}
	if err := os.WriteFile(d.config, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		d.t.Fatal(err)
	}
	d.start()
}

// current is the release the current link names, "" if none.
func (d *daemon) current() string {
	cur, err := os.Readlink(filepath.Join(d.dir, "data/apps/hello/current"))
	if err != nil {
		return ""
	}
	return filepath.Base(cur)
}

// statuses is each release's status on disk.
func (d *daemon) statuses() map[string]string {
	d.t.Helper()
	out := map[string]string{}
	files, _ := filepath.Glob(filepath.Join(d.dir, "data/apps/hello/releases/v*.json"))
	for _, f := range files {
		id := strings.TrimSuffix(filepath.Base(f), ".json")
		if st, ok := d.release(id)["status"].(string); ok {
			out[id] = st
		}
	}
	return out
}

// building lists the releases left building on disk.
func (d *daemon) building() []string {
	var out []string
	for id, st := range d.statuses() {
		if st == "building" {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// fleetRefs lists the refs that keep a shipped release's revision.
func (d *daemon) fleetRefs() string {
	out, err := exec.Command("git", "--git-dir", filepath.Join(d.dir, "data/apps/hello/repo.git"),
		"for-each-ref", "--format=%(refname)", "refs/deployer/fleet/").Output()
	if err != nil {
		d.t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// consistent checks that d is consistent on its own: one release live,
// the one current names and status reports, its revision the deploy
// branch's, and it answers every request. It returns that release.
func (d *daemon) consistent() string {
	d.t.Helper()
	id := d.current()
	if id == "" {
		d.t.Fatalf("%s: no current release", d.dir)
	}
	if live := d.status().Live; live != id {
		d.t.Errorf("%s: current names %s, status says %s is live", d.dir, id, live)
	}
	for other, st := range d.statuses() {
		if st == "live" && other != id {
			d.t.Errorf("%s: %s is live on disk, but current names %s", d.dir, other, id)
		}
	}
	rel := d.release(id)
	if rel["status"] != "live" {
		d.t.Errorf("%s: the current release %s is %v", d.dir, id, rel["status"])
	}
	rev, _ := rel["revision"].(string)
	if b := d.branch(); b != rev {
		d.t.Errorf("%s: the branch names %.7s, the live release %s runs %.7s", d.dir, b, id, rev)
	}
	for range 10 {
		body, err := d.get()
		if want := "hello from " + id + " (" + rev[:7] + ")"; err != nil || !strings.HasPrefix(body, want) {
			d.t.Fatalf("%s: want %q serving, got %q %v", d.dir, want, body, err)
		}
	}
	return id
}

// fleetTellsTheTruth checks that `status --fleet` on d1 shows each host's
// live release and revision as the host has them, and names exactly the
// hosts that differ from d1 as split. It returns the text output.
func fleetTellsTheTruth(t *testing.T, ds ...*daemon) string {
	t.Helper()
	names := []string{"web1", "web2", "web3"}
	v := ds[0].fleetStatus()
	var differ []string
	for i, d := range ds {
		var state *struct{ live, rev string }
		for _, h := range v.Hosts {
			if h.Host == names[i] && h.State != nil && len(h.State.Apps) == 1 {
				state = &struct{ live, rev string }{h.State.Apps[0].Live, h.State.Apps[0].Revision}
			}
		}
		id := d.current()
		rev, _ := d.release(id)["revision"].(string)
		if state == nil || state.live != id || state.rev != rev {
			t.Errorf("status --fleet on web1 says %s runs %+v; it runs %s (%.7s)", names[i], state, id, rev)
		}
		if i > 0 && id != ds[0].current() {
			differ = append(differ, names[i])
		}
	}
	if got := v.Split["hello"]; !slices.Equal(got, differ) {
		t.Errorf("status --fleet names %v as split, want %v", got, differ)
	}
	out := ds[0].mustCLI("status", "--fleet")
	if len(differ) > 0 && !strings.Contains(out, "split: hello differs on "+strings.Join(differ, ", ")) {
		t.Errorf("no split shown:\n%s", out)
	}
	if len(differ) == 0 && strings.Contains(out, "split") {
		t.Errorf("a split shown where there is none:\n%s", out)
	}
	return out
}

// converges pushes a new commit to d1 and checks that every host goes live
// with the same release, tree and branch, and that no release is left
// building anywhere. It returns the release.
func converges(t *testing.T, r *appRepo, d1, d2, d3 *daemon) string {
	t.Helper()
	rev := r.commit("converge", map[string]string{"message.txt": "converged " + time.Now().String()})
	out := r.mustPush(d1)
	id := d1.consistent()
	sum := d1.treeSum(id)
	for i, d := range []*daemon{d1, d2, d3} {
		if got := d.consistent(); got != id {
			t.Errorf("web%d runs %s after the converging push, web1 %s:\n%s", i+1, got, id, out)
			continue
		}
		if d.branch() != rev {
			t.Errorf("web%d's branch is not the pushed revision", i+1)
		}
		if d.treeSum(id) != sum {
			t.Errorf("the tree of %s on web%d differs from web1's", id, i+1)
		}
		if b := d.building(); len(b) > 0 {
			t.Errorf("web%d still has %v building after the next push: %v", i+1, b, d.statuses())
		}
		if refs := d.fleetRefs(); refs != "" {
			t.Errorf("web%d keeps shipment refs after the next push: %s", i+1, refs)
		}
	}
	fleetTellsTheTruth(t, d1, d2, d3)
	return id
}

// bigFile is n random bytes, which no compression shrinks.
func bigFile(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// pushAsync pushes r to d in the background; the channel gets the output
// and the error.
type pushResult struct {
	out string
	err error
}

func pushAsync(r *appRepo, d *daemon) chan pushResult {
	ch := make(chan pushResult, 1)
	go func() {
		out, err := r.push(d.url(testToken))
		ch <- pushResult{out, err}
	}()
	return ch
}

func waitPush(t *testing.T, ch chan pushResult) pushResult {
	t.Helper()
	select {
	case res := <-ch:
		return res
	case <-time.After(3 * time.Minute):
		t.Fatal("the push did not return in 3 minutes")
	}
	return pushResult{}
}

// everyoneOn checks that each daemon is consistent and runs id.
func everyoneOn(t *testing.T, id string, ds ...*daemon) {
	t.Helper()
	for i, d := range ds {
		if got := d.consistent(); got != id {
			t.Errorf("web%d runs %s, want %s", i+1, got, id)
		}
	}
}

// TestRolloutEntryKilledDuringTheShipChangesNothing (a): web1 dies while
// its upload to the peers is under way. Nothing went live anywhere; web1
// marks its release failed when it restarts; a peer that holds the
// release does not run it; the next push converges.
func TestRolloutEntryKilledDuringTheShipChangesNothing(t *testing.T) {
	d1, d2, d3 := threeHosts(t, "")
	r := newRolloutRepo(t)
	r.mustPush(d1)
	rev1 := d1.branch()

	r.commit("big", map[string]string{"big.bin": bigFile(t, 48<<20), "message.txt": "two"})
	pushed := pushAsync(r, d1)
	incoming := filepath.Join(d2.dir, "data/apps/hello/incoming")
	testutil.WaitFor(t, 2*time.Minute, "web1 to start its upload to web2", func() bool {
		parts, _ := filepath.Glob(filepath.Join(incoming, "*", "*"))
		return len(parts) > 0
	})
	d1.kill()
	res := waitPush(t, pushed)
	if res.err == nil {
		t.Fatalf("the push went through with the entry host killed:\n%s", res.out)
	}
	_, received := d2.statuses()["v2"]
	t.Logf("killed web1 during the ship; web2 holds v2: %v", received)

	for i, d := range []*daemon{d2, d3} {
		everyoneOn(t, "v1", d)
		if d.branch() != rev1 {
			t.Errorf("web%d's branch moved", i+2)
		}
	}
	d1.restart()
	everyoneOn(t, "v1", d1)
	if st := d1.release("v2")["status"]; st != "failed" {
		t.Errorf("web1's v2 after the restart: %v", st)
	}
	if _, err := os.Stat(filepath.Join(d1.dir, "data/apps/hello/releases/v2")); err == nil {
		t.Errorf("web1 kept the tree of its interrupted v2")
	}
	if refs := d1.fleetRefs(); refs != "" {
		t.Errorf("web1 keeps the ref of its interrupted shipment after its restart: %s", refs)
	}
	if _, err := os.Stat(filepath.Join(d1.dir, "data/apps/hello/outgoing")); err == nil {
		t.Errorf("web1 keeps the pack of its interrupted shipment after its restart")
	}
	fleetTellsTheTruth(t, d1, d2, d3)
	id := converges(t, r, d1, d2, d3)
	if id == "v2" {
		t.Fatalf("the converging push reused v2")
	}
	for i, d := range []*daemon{d1, d2, d3} {
		if st, ok := d.statuses()["v2"]; ok && st != "failed" {
			t.Errorf("web%d's v2 after the next push: %s", i+1, st)
		}
	}
}

// TestRolloutPeerKilledWhileItReceivesIsUndone (b): web2 dies while it
// unpacks the release (or just after): the push is rejected, nothing
// changed on web1 and web3, and web2 marks the release failed when it
// restarts. The next push converges.
func TestRolloutPeerKilledWhileItReceivesIsUndone(t *testing.T) {
	crashMatrix(t)
	d1, d2, d3 := threeHosts(t, "")
	r := newRolloutRepo(t)
	r.mustPush(d1)
	rev1 := d1.branch()

	r.commit("big", map[string]string{"big.bin": bigFile(t, 48<<20), "message.txt": "two"})
	pushed := pushAsync(r, d1)
	testutil.WaitFor(t, 2*time.Minute, "web2 to make v2", func() bool {
		_, err := os.Stat(filepath.Join(d2.dir, "data/apps/hello/releases/v2.json"))
		return err == nil
	})
	d2.kill()
	res := waitPush(t, pushed)
	if res.err == nil {
		t.Fatalf("the push went through with web2 killed:\n%s", res.out)
	}
	if !strings.Contains(res.out, "web2") {
		t.Errorf("the rejected push does not name web2:\n%s", res.out)
	}
	everyoneOn(t, "v1", d1, d3)
	d2.restart()
	everyoneOn(t, "v1", d1, d2, d3)
	for i, d := range []*daemon{d1, d2, d3} {
		if d.branch() != rev1 {
			t.Errorf("web%d's branch moved", i+1)
		}
		if st, ok := d.statuses()["v2"]; ok && st != "failed" {
			t.Errorf("web%d's v2: %s\n%s", i+1, st, res.out)
		}
	}
	if _, err := os.Stat(filepath.Join(d2.dir, "data/apps/hello/releases/v2")); err == nil {
		t.Errorf("web2 kept the half-unpacked tree of v2")
	}
	fleetTellsTheTruth(t, d1, d2, d3)
	converges(t, r, d1, d2, d3)
}

// slowStart is the start script of the go-live crash tests: a release that
// holds slow-on-<host> touches the file that names on that host, then
// takes its time to start.
const slowStart = `#!/bin/sh
if [ -e "fail-on-$HOST_NAME" ]; then echo "this release refuses to start on $HOST_NAME"; exit 1; fi
if [ -e "slow-on-$HOST_NAME" ]; then touch "$(cat slow-on-$HOST_NAME)"; sleep 3; fi
exec ./bin/hello
`

// TestRolloutPeerKilledDuringItsGoLiveIsUndone (c): web3 dies while it
// starts the release (preflight, green), after web1 and web2 went live:
// web1 and web2 go back, the push is rejected, and web3, restarted, runs
// what it ran, with the release failed and no worker of it left.
func TestRolloutPeerKilledDuringItsGoLiveIsUndone(t *testing.T) {
	crashMatrix(t)
	d1, d2, d3 := threeHosts(t, "")
	r := newRolloutRepo(t)
	if err := os.WriteFile(filepath.Join(r.dir, "start.sh"), []byte(slowStart), 0o755); err != nil {
		t.Fatal(err)
	}
	r.commit("slow start", nil)
	r.mustPush(d1)
	rev1 := d1.branch()

	gate := filepath.Join(t.TempDir(), "web3-starting")
	r.commit("slow on web3", map[string]string{"slow-on-web3": gate, "message.txt": "two"})
	pushed := pushAsync(r, d1)
	testutil.WaitFor(t, 2*time.Minute, "web3 to start v2", func() bool {
		_, err := os.Stat(gate)
		return err == nil
	})
	if d2.status().Live != "v2" {
		t.Errorf("web3 went live before web2")
	}
	d3.kill()
	res := waitPush(t, pushed)
	if res.err == nil {
		t.Fatalf("the push went through with web3 killed:\n%s", res.out)
	}
	for _, want := range []string{"web2 back on v1", "web1 back on v1"} {
		if !strings.Contains(res.out, want) {
			t.Errorf("no %q in the rejected push:\n%s", want, res.out)
		}
	}
	everyoneOn(t, "v1", d1, d2)
	d3.restart()
	everyoneOn(t, "v1", d1, d2, d3)
	for i, d := range []*daemon{d1, d2, d3} {
		if d.branch() != rev1 {
			t.Errorf("web%d's branch moved", i+1)
		}
	}
	if st := d3.release("v2")["status"]; st != "failed" {
		t.Errorf("web3's v2 after its restart: %v", st)
	}
	fleetTellsTheTruth(t, d1, d2, d3)
	r.git("rm", "-q", "slow-on-web3")
	converges(t, r, d1, d2, d3)
}

// TestRolloutPeerKilledAfterItsCutOverIsReportedTruthfully (c, later): web3
// dies after its cut-over, in its post_deploy hook, before it could tell
// web1. web1 and web2 go back; web3, restarted, runs the release the
// push was rejected with. The rejected push must not claim web3 never
// switched: web1 cannot know where web3 stands, and must say so (or put
// it back).
func TestRolloutPeerKilledAfterItsCutOverIsReportedTruthfully(t *testing.T) {
	crashMatrix(t)
	d1, d2, d3 := threeHosts(t, "")
	gate := filepath.Join(t.TempDir(), "web3-post-deploy")
	hold := filepath.Join(t.TempDir(), "let-go")
	d3.reconfig("    drain_timeout: 10s\n", "    drain_timeout: 10s\n    hooks:\n      post_deploy: \"if [ -e slow-post ]; then touch "+
		gate+"; while [ ! -e "+hold+" ]; do sleep 0.05; done; fi\"\n")
	t.Cleanup(func() { os.WriteFile(hold, nil, 0o644) })
	r := newRolloutRepo(t)
	r.mustPush(d1)
	rev1 := d1.branch()

	rev2 := r.commit("slow post_deploy", map[string]string{"slow-post": "x", "message.txt": "two"})
	pushed := pushAsync(r, d1)
	testutil.WaitFor(t, 2*time.Minute, "web3's post_deploy hook", func() bool {
		_, err := os.Stat(gate)
		return err == nil
	})
	d3.kill()
	os.WriteFile(hold, nil, 0o644)
	res := waitPush(t, pushed)
	if res.err == nil {
		t.Fatalf("the push went through with web3 killed:\n%s", res.out)
	}
	everyoneOn(t, "v1", d1, d2)
	for i, d := range []*daemon{d1, d2} {
		if d.branch() != rev1 {
			t.Errorf("web%d's branch moved", i+1)
		}
	}
	d3.restart()
	// web3 had switched: it runs v2 after its restart, consistently.
	if got := d3.consistent(); got != "v2" || d3.branch() != rev2 {
		t.Errorf("web3 after its restart: %s", got)
	}
	fleetTellsTheTruth(t, d1, d2, d3)
	if strings.Contains(res.out, "web3 never switched") || !strings.Contains(res.out, "web3 may run v2") {
		t.Errorf("the rejected push does not say that web3 may run v2 (it does):\n%s", res.out)
	}
	converges(t, r, d1, d2, d3)
}

// pauseFleet is extraFleet for a rollout that waits between batches: the
// window in which the entry host is live and the peers are not.
const pauseFleet = "  pause: 8s\n"

// TestRolloutEntryKilledRightAfterItWentLive (d): web1 dies after its own
// cut-over, before any peer switched. web1, restarted, runs the new
// release; the peers run the old one and hold the new one, not live;
// status --fleet shows the split; rollback --fleet --to the old release
// converges the fleet, and so does the next push.
func TestRolloutEntryKilledRightAfterItWentLive(t *testing.T) {
	crashMatrix(t)
	d1, d2, d3 := threeHosts(t, pauseFleet)
	r := newRolloutRepo(t)
	r.mustPush(d1)
	rev1 := d1.branch()

	rev2 := r.commit("second", map[string]string{"message.txt": "two"})
	pushed := pushAsync(r, d1)
	testutil.WaitFor(t, 2*time.Minute, "web1 to go live with v2", func() bool { return d1.status().Live == "v2" })
	d1.kill()
	waitPush(t, pushed)
	everyoneOn(t, "v1", d2, d3)
	for i, d := range []*daemon{d2, d3} {
		if st := d.release("v2")["status"]; st != "building" {
			t.Errorf("web%d's v2, shipped, never live: %v", i+2, st)
		}
		if d.branch() != rev1 {
			t.Errorf("web%d's branch moved", i+2)
		}
	}
	d1.restart()
	if got := d1.consistent(); got != "v2" || d1.branch() != rev2 {
		t.Errorf("web1 after its restart runs %s", got)
	}
	fleetTellsTheTruth(t, d1, d2, d3)

	// The split's own advice: roll the fleet back to one release.
	out, err := d1.cli("rollback", "hello", "--fleet", "--to", "v1")
	if err != nil {
		t.Errorf("rollback --fleet --to v1 after the split: %v\n%s", err, out)
	} else {
		everyoneOn(t, "v1", d1, d2, d3)
		fleetTellsTheTruth(t, d1, d2, d3)
	}
	converges(t, r, d1, d2, d3)
}

// TestRolloutPeerRestartedBetweenShipAndGoLiveFailsCleanly (e): web3
// is stopped and started while web1 pauses after its own cut-over; the
// release it held is failed at its start, so its go-live is refused and
// every switched host goes back.
func TestRolloutPeerRestartedBetweenShipAndGoLiveFailsCleanly(t *testing.T) {
	crashMatrix(t)
	d1, d2, d3 := threeHosts(t, pauseFleet)
	r := newRolloutRepo(t)
	r.mustPush(d1)
	rev1 := d1.branch()

	r.commit("second", map[string]string{"message.txt": "two"})
	pushed := pushAsync(r, d1)
	testutil.WaitFor(t, 2*time.Minute, "web1 to go live with v2", func() bool { return d1.status().Live == "v2" })
	d3.stop()
	d3.restart()
	if st := d3.release("v2")["status"]; st != "failed" {
		t.Errorf("web3's shipped v2 after its restart: %v", st)
	}
	res := waitPush(t, pushed)
	if res.err == nil {
		t.Fatalf("the push went through although web3 lost v2:\n%s", res.out)
	}
	everyoneOn(t, "v1", d1, d2, d3)
	for i, d := range []*daemon{d1, d2, d3} {
		if d.branch() != rev1 {
			t.Errorf("web%d's branch moved", i+1)
		}
		if b := d.building(); len(b) > 0 {
			t.Errorf("web%d has %v building", i+1, b)
		}
	}
	fleetTellsTheTruth(t, d1, d2, d3)
	converges(t, r, d1, d2, d3)
}

// TestRolloutTwoPushesBackToBackOneAfterTheOther: the second push waits
// for the first rollout and then rolls out too.
func TestRolloutTwoPushesBackToBackOneAfterTheOther(t *testing.T) {
	d1, d2, d3 := threeHosts(t, "")
	r := newRolloutRepo(t)
	r.mustPush(d1)
	r.commit("second", map[string]string{"message.txt": "two"})
	first := pushAsync(r, d1)
	testutil.WaitFor(t, time.Minute, "web1 to start v2", func() bool {
		_, ok := d1.statuses()["v2"]
		return ok
	})
	rev3 := r.commit("third", map[string]string{"message.txt": "three"})
	second := pushAsync(r, d1)
	for i, res := range []pushResult{waitPush(t, first), waitPush(t, second)} {
		if res.err != nil {
			t.Errorf("push %d: %v\n%s", i+1, res.err, res.out)
		}
	}
	everyoneOn(t, "v3", d1, d2, d3)
	for i, d := range []*daemon{d1, d2, d3} {
		if d.branch() != rev3 {
			t.Errorf("web%d's branch is not the last push", i+1)
		}
		if b := d.building(); len(b) > 0 {
			t.Errorf("web%d has %v building", i+1, b)
		}
	}
	fleetTellsTheTruth(t, d1, d2, d3)
}

// TestRolloutDoesNotUndoAPushToAPeerMeanwhile: while web1 pauses
// after its own cut-over, someone pushes another commit to web2 directly
// (web2 has no peers: it deploys alone) and it goes live there. web1's
// rollout must not then put its release live on web2 over that push,
// moving web2's branch to a revision that does not contain it: like a
// push that waited for the deploy lock (SPEC §5), the rollout is refused
// there, and undone.
func TestRolloutDoesNotUndoAPushToAPeerMeanwhile(t *testing.T) {
	crashMatrix(t)
	d1, d2, d3 := threeHosts(t, pauseFleet)
	r := newRolloutRepo(t)
	r.mustPush(d1)
	other := &appRepo{t: t, dir: filepath.Join(t.TempDir(), "other")}
	if out, err := runGit("", "clone", "-q", r.dir, other.dir); err != nil {
		t.Fatalf("clone: %v\n%s", err, out)
	}

	r.commit("second", map[string]string{"message.txt": "two"})
	pushed := pushAsync(r, d1)
	testutil.WaitFor(t, 2*time.Minute, "web1 to go live with v2", func() bool { return d1.status().Live == "v2" })
	revB := other.commit("pushed to web2", map[string]string{"web2.txt": "pushed to web2"})
	other.mustPush(d2)
	if d2.consistent() == "v2" || d2.branch() != revB {
		t.Fatalf("web2's own push did not go live")
	}
	res := waitPush(t, pushed)
	d2.consistent()
	if d2.branch() != revB {
		t.Errorf("web1's rollout moved web2's branch off the commit pushed to web2, which its release does not contain (push: %v):\n%s",
			res.err, res.out)
	}
	if res.err == nil {
		t.Errorf("web1's push succeeded without going live on web2 as pushed:\n%s", res.out)
	}
	for i, d := range []*daemon{d1, d3} {
		d.consistent()
		if b := d.building(); len(b) > 0 {
			t.Errorf("web%d has %v building", []int{1, 3}[i], b)
		}
	}
	fleetTellsTheTruth(t, d1, d2, d3)
	// Converge: merge what web2 got, and push to web1.
	r.git("pull", "-q", "--no-rebase", "--no-edit", other.dir, "main")
	converges(t, r, d1, d2, d3)
}

func runGit(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestRolloutToAPeerWithATooSmallReleaseLimitChangesNothing: web3's
// git.max_release_size is smaller than the built tree; the rollout stops
// at the ship, nothing goes live anywhere, no release stays building, and
// once web3's limit is raised the next push converges.
func TestRolloutToAPeerWithATooSmallReleaseLimitChangesNothing(t *testing.T) {
	crashMatrix(t)
	d1, d2, d3 := threeHosts(t, "")
	r := newRolloutRepo(t)
	r.mustPush(d1)
	rev1 := d1.branch()
	d3.reconfig("  lock_timeout: 1m\n", "  lock_timeout: 1m\n  max_release_size: 2MiB\n")

	r.commit("second", map[string]string{"message.txt": "two"})
	out, err := r.push(d1.url(testToken))
	if err == nil {
		t.Fatalf("the push went through although web3 cannot hold the tree:\n%s", out)
	}
	if !strings.Contains(out, "web3") || !strings.Contains(out, "nothing changed on any host") {
		t.Errorf("the rejected push does not say web3 refused and nothing changed:\n%s", out)
	}
	everyoneOn(t, "v1", d1, d2, d3)
	for i, d := range []*daemon{d1, d2, d3} {
		if d.branch() != rev1 {
			t.Errorf("web%d's branch moved", i+1)
		}
		if b := d.building(); len(b) > 0 {
			t.Errorf("web%d has %v building", i+1, b)
		}
		if st := d.statuses()["v2"]; st != "failed" {
			t.Errorf("web%d's v2: %q", i+1, st)
		}
		if _, err := os.Stat(filepath.Join(d.dir, "data/apps/hello/releases/v2")); i > 0 && err == nil {
			t.Errorf("web%d kept the tree of v2, which never went live", i+1)
		}
		if parts, _ := filepath.Glob(filepath.Join(d.dir, "data/apps/hello/incoming/*/*")); len(parts) > 0 {
			t.Errorf("web%d kept the parts of the shipment: %v", i+1, parts)
		}
	}
	fleetTellsTheTruth(t, d1, d2, d3)
	d3.reconfig("  max_release_size: 2MiB\n", "")
	converges(t, r, d1, d2, d3)
}

// TestRolloutWithAPeerKilledAndLeftDownEndsInBoundedTime: web3 is killed
// after it received the release and stays down. Its descriptor keeper
// still holds its git listener, so a connection to it is accepted by the
// kernel and never answered. web1's rollout must still end, undone, in a
// bounded time, not wait for web3 to come back.
func TestRolloutWithAPeerKilledAndLeftDownEndsInBoundedTime(t *testing.T) {
	crashMatrix(t)
	d1, d2, d3 := threeHosts(t, pauseFleet)
	r := newRolloutRepo(t)
	r.mustPush(d1)
	rev1 := d1.branch()

	r.commit("second", map[string]string{"message.txt": "two"})
	pushed := pushAsync(r, d1)
	testutil.WaitFor(t, 2*time.Minute, "web1 to go live with v2", func() bool { return d1.status().Live == "v2" })
	d3.kill()
	var res pushResult
	select {
	case res = <-pushed:
	case <-time.After(3 * time.Minute):
		t.Errorf("the rollout still waits for web3, down, after 3 minutes")
		d3.restart()
		res = waitPush(t, pushed)
	}
	if res.err == nil {
		t.Fatalf("the push went through with web3 down:\n%s", res.out)
	}
	if !strings.Contains(res.out, "web2 back on v1") || !strings.Contains(res.out, "web3 may run v2") {
		t.Errorf("the rejected push does not say where each host stands:\n%s", res.out)
	}
	everyoneOn(t, "v1", d1, d2)
	if d3.cmd != nil && !alive(d3.cmd.Process.Pid) {
		d3.restart()
	}
	everyoneOn(t, "v1", d1, d2, d3)
	for i, d := range []*daemon{d1, d2, d3} {
		if d.branch() != rev1 {
			t.Errorf("web%d's branch moved", i+1)
		}
	}
	fleetTellsTheTruth(t, d1, d2, d3)
	converges(t, r, d1, d2, d3)
}

// TestRolloutInterruptedLeavesNoShipmentPartsOnThePeers: web1 dies during its
// upload; the part a peer received stays in apps/APP/incoming until a
// shipment arrives more than an hour later (Staging.Sweep runs only when
// a shipment is opened, with a one-hour age): neither the next rollout nor
// a restart of the peer removes it.
func TestRolloutInterruptedLeavesNoShipmentPartsOnThePeers(t *testing.T) {
	t.Skip("BUG: a part of a shipment whose entry host died stays in the peer's apps/APP/incoming (up to 2×max_release_size+64MiB per shipment) " +
		"until a shipment is opened there more than an hour later; nothing sweeps it on a timer, at the next rollout or at the peer's start")
	d1, d2, d3 := threeHosts(t, "")
	r := newRolloutRepo(t)
	r.mustPush(d1)
	r.commit("big", map[string]string{"big.bin": bigFile(t, 48<<20), "message.txt": "two"})
	pushed := pushAsync(r, d1)
	incoming := filepath.Join(d2.dir, "data/apps/hello/incoming")
	testutil.WaitFor(t, 2*time.Minute, "web1 to start its upload to web2", func() bool {
		parts, _ := filepath.Glob(filepath.Join(incoming, "*", "*"))
		return len(parts) > 0
	})
	d1.kill()
	waitPush(t, pushed)
	d1.restart()
	d2.stop()
	d2.restart()
	converges(t, r, d1, d2, d3)
	for i, d := range []*daemon{d2, d3} {
		if parts, _ := filepath.Glob(filepath.Join(d.dir, "data/apps/hello/incoming/*/*")); len(parts) > 0 {
			t.Errorf("web%d keeps the parts of the interrupted shipment: %v", i+2, parts)
		}
	}
}

// crashMatrix skips the rest of the kill -9 matrix unless
// DEPLOYER_FLEET_CRASH=1: each case runs three daemons for up to two
// minutes, too long for every run of the suite. The cases that run
// always are the entry killed during the ship and back-to-back pushes
// (with, in rollout_test.go, the entry killed mid-rollout and a release
// failing on the last host).
func crashMatrix(t *testing.T) {
	if os.Getenv("DEPLOYER_FLEET_CRASH") == "" {
		t.Skip("part of the full kill -9 matrix of fleet rollouts: set DEPLOYER_FLEET_CRASH=1 (about 10 minutes)")
	}
}
