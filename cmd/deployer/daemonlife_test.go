package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
	"github.com/deployer/deployer/supervisor"
)

// The daemon is never the outage: it can be upgraded in place, and killed,
// while its apps keep answering; the next daemon adopts the workers.

// buildDaemonVersion builds the daemon again, as version v, into dir.
func buildDaemonVersion(t *testing.T, v string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "deployer-"+v)
	args := []string{"build", "-ldflags", "-X github.com/deployer/deployer/internal/buildinfo.Version=" + v, "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("build %s: %v\n%s", v, err, out)
	}
	return bin
}

// daemonVersion asks the running daemon which it is, through the CLI.
func (d *daemon) daemonVersion() (version string, pid int) {
	d.t.Helper()
	var v struct {
		Daemon *struct {
			Version string `json:"version"`
			PID     int    `json:"pid"`
		} `json:"daemon"`
	}
	out := d.mustCLI("version", "--json")
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Daemon == nil {
		d.t.Fatalf("version --json: %v\n%s", err, out)
	}
	return v.Daemon.Version, v.Daemon.PID
}

// sameWorkers fails unless the app's workers are exactly pids.
func (d *daemon) sameWorkers(pids []int) {
	d.t.Helper()
	got := d.workerPIDs()
	slices.Sort(got)
	want := slices.Sorted(slices.Values(pids))
	if !slices.Equal(got, want) {
		d.t.Fatalf("workers %v, want the same processes %v", got, want)
	}
}

// reloadReplaces reloads the app and checks that fresh workers serve and
// the previous ones (pids) were drained and are gone.
func (d *daemon) reloadReplaces(pids []int) {
	d.t.Helper()
	d.mustCLI("reload", "hello")
	for _, w := range d.status().Workers {
		if slices.Contains(pids, w.PID) && w.State != supervisor.Draining && w.State != supervisor.Stopped {
			d.t.Fatalf("worker %d survived the reload: %+v", w.PID, w)
		}
	}
	testutil.WaitFor(d.t, 30*time.Second, "the previous workers to be gone", func() bool {
		return !slices.ContainsFunc(pids, alive)
	})
	d.serves("v1")
}

func TestUpgradeUnderLoadKeepsTheWorkersAndAnswersWithTheNewVersion(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	pids := d.workerPIDs()
	_, oldPID := d.daemonVersion()
	bin := buildDaemonVersion(t, "e2e-upgraded")

	l := testutil.StartLoad(t, "http://"+d.appAddr+"/", 8)
	time.Sleep(200 * time.Millisecond) // let the load reach its pace before the handover
	out := d.mustCLI("upgrade", "--binary", bin)
	l.Finish(t, "the upgrade", 100)
	if !strings.Contains(out, "deployer upgraded: daemon e2e-upgraded") {
		t.Fatalf("upgrade output:\n%s", out)
	}
	version, pid := d.daemonVersion()
	if version != "e2e-upgraded" || pid == oldPID {
		t.Fatalf("after the upgrade the daemon is %s pid %d (was pid %d)", version, pid, oldPID)
	}
	testutil.WaitFor(t, 10*time.Second, "the old daemon to exit", func() bool { return !alive(oldPID) })
	d.sameWorkers(pids)

	// The new daemon manages the adopted workers as its own: a push
	// deploys over them, and they drain.
	r.commit("after upgrade", map[string]string{"message.txt": "upgraded"})
	r.mustPush(d)
	testutil.WaitFor(t, 30*time.Second, "the adopted workers to be drained", func() bool {
		return !slices.ContainsFunc(pids, alive)
	})
	if body, err := d.get(); err != nil || !strings.HasPrefix(body, "hello from v2") {
		t.Fatalf("v2 not served after the upgrade: %q %v", body, err)
	}
}

func TestUpgradeToABrokenBinaryIsRefusedAndTheOldDaemonServes(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	pids := d.workerPIDs()
	_, oldPID := d.daemonVersion()
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct{ name, bin, want string }{
		{"exits at once", script("exits", `echo "cannot run here" >&2; exit 1`), "upgrade refused, nothing changed"},
		{"rejects the config", script("nocheck", `case "$1" in check) echo "apps.hello: bad" >&2; exit 1;; esac; exec `+daemonBin+` "$@"`),
			"upgrade refused, nothing changed"},
		{"dies after the handover", script("dies", `case "$1" in serve) echo "crash at start" >&2; exit 3;; esac; exec `+daemonBin+` "$@"`),
			"upgrade failed, the old daemon goes on"},
	}
	for _, c := range cases {
		l := testutil.StartLoad(t, "http://"+d.appAddr+"/", 4)
		out, err := d.cli("upgrade", "--binary", c.bin)
		l.Finish(t, "a refused upgrade ("+c.name+")", 10)
		if err == nil || !strings.Contains(out, c.want) {
			t.Fatalf("%s: upgrade gave %v:\n%s", c.name, err, out)
		}
		if _, pid := d.daemonVersion(); pid != oldPID {
			t.Fatalf("%s: the daemon is pid %d, want the old one, %d", c.name, pid, oldPID)
		}
		d.sameWorkers(pids)
		d.serves("v1")
	}
	d.reloadReplaces(pids) // the daemon that took its workers back manages them
}

func TestKill9UnderLoadLosesNoRequestAndTheNextDaemonAdoptsTheWorkers(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	pids := d.workerPIDs()

	l := testutil.StartLoad(t, "http://"+d.appAddr+"/", 8)
	time.Sleep(200 * time.Millisecond)
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	down := testutil.StartLoad(t, "http://"+d.appAddr+"/", 4) // fresh clients while no daemon runs
	time.Sleep(300 * time.Millisecond)
	down.Finish(t, "the daemon's absence", 10)
	d.start()
	testutil.WaitFor(t, 30*time.Second, "the workers to be adopted", func() bool { return len(d.workerPIDs()) == 2 })
	l.Finish(t, "kill -9 and restart", 100)
	d.sameWorkers(pids)
	if st := d.status(); st.Live != "v1" || st.Workers[0].State != "running" {
		t.Fatalf("status after adoption: %+v", st)
	}
	// No process of the old daemon is left but the adopted workers and the
	// descriptor keeper it shares with the new one.
	for _, p := range processesUnder(filepath.Join(d.dir, "data", "apps")) {
		if !slices.Contains(pids, p) {
			t.Fatalf("process %d left behind by the killed daemon", p)
		}
	}
	d.reloadReplaces(pids)
}

// TestAPushInFlightFinishesBeforeTheUpgradeHandsOver: the upgrade waits for
// a push that is building; the push succeeds, and the new daemon takes the
// next one.
func TestAPushInFlightFinishesBeforeTheUpgradeHandsOver(t *testing.T) {
	gate := t.TempDir()
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	bin := buildDaemonVersion(t, "e2e-upgraded")
	gatedBuild(t, d, gate)
	r.commit("two", map[string]string{"message.txt": "two"})
	pushed := make(chan error, 1)
	go func() { _, err := r.push(d.url(testToken)); pushed <- err }()
	waitBuilding(t, gate)
	upgraded := make(chan string, 1)
	go func() { out, _ := d.cli("upgrade", "--binary", bin); upgraded <- out }()
	testutil.WaitFor(t, 30*time.Second, "the upgrade to wait for the push", func() bool {
		return strings.Contains(d.log.String(), "upgrade: waiting for the pushes in flight")
	})
	select {
	case out := <-upgraded:
		t.Fatalf("the upgrade did not wait for the push in flight:\n%s", out)
	case <-time.After(time.Second):
	}
	os.WriteFile(filepath.Join(gate, "open"), nil, 0o644)
	if err := <-pushed; err != nil {
		t.Fatalf("the push in flight failed: %v", err)
	}
	if out := <-upgraded; !strings.Contains(out, "deployer upgraded: daemon e2e-upgraded") {
		t.Fatalf("upgrade:\n%s", out)
	}
	d.serves("v2")
	r.commit("three", map[string]string{"message.txt": "three"})
	r.mustPush(d) // the new daemon takes pushes (the build is still gated open)
	d.serves("v3")
}

// TestAClientSaysTheDaemonIsDownWhileOnlyTheKeeperHoldsItsSocket: after a
// kill -9 the keeper still holds the control socket, so a connection would
// wait in its queue for the next daemon; a client command says at once that
// the daemon is not running, exits 1, and talks to the next daemon.
func TestAClientSaysTheDaemonIsDownWhileOnlyTheKeeperHoldsItsSocket(t *testing.T) {
	d := newDaemon(t, "")
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	type answer struct {
		out string
		err error
	}
	got := make(chan answer, 1)
	go func() { out, err := d.cli("status"); got <- answer{out, err} }()
	select {
	case a := <-got:
		var ee *exec.ExitError
		if !errors.As(a.err, &ee) || ee.ExitCode() != 1 || !strings.Contains(a.out, "not running") {
			t.Fatalf("status with no daemon: %v\n%s", a.err, a.out)
		}
	case <-time.After(10 * time.Second):
		d.start() // lets the hung client go
		t.Fatal("status with no daemon running hung instead of saying so")
	}
	d.start()
	d.mustCLI("status")
}

// keeperPID is the pid of the descriptor keeper of d.
func (d *daemon) keeperPID() int {
	d.t.Helper()
	for _, pid := range processesUnder(d.dir) {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); strings.Contains(string(b), "fdstore") {
			return pid
		}
	}
	d.t.Fatal("no descriptor keeper runs")
	return 0
}

// TestTheNextDaemonTakesTheSocketsBackFromTheWorkersWhenTheKeeperDiedToo:
// the daemon and then its keeper are killed; only the workers still hold
// the app's socket. The next daemon takes it back from a worker
// (pidfd_getfd), adopts them, and serves and reloads as usual.
func TestTheNextDaemonTakesTheSocketsBackFromTheWorkersWhenTheKeeperDiedToo(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	pids := d.workerPIDs()
	keeper := d.keeperPID()
	l := testutil.StartLoad(t, "http://"+d.appAddr+"/", 4)
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	syscall.Kill(keeper, syscall.SIGKILL)
	testutil.WaitFor(t, 10*time.Second, "the keeper to be gone", func() bool { return !alive(keeper) })
	d.start()
	testutil.WaitFor(t, 30*time.Second, "the workers to be adopted", func() bool { return len(d.workerPIDs()) == 2 })
	l.Finish(t, "kill -9 of the daemon and its keeper, and a restart", 50)
	d.sameWorkers(pids)
	d.reloadReplaces(pids)
}
