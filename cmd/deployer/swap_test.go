package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
	"github.com/deployer/deployer/supervisor"
)

// slowDrainDaemon runs the app of testdata/slowdrain (3s to drain) with
// min_uptime 1s.
func slowDrainDaemon(t *testing.T) (*daemon, *appRepo) {
	t.Helper()
	d := writeDaemonConfig(t, "")
	cfg := fmt.Sprintf("data_dir: data\ngit:\n  http_listen: %s\n  tokens_file: tokens\n  lock_timeout: 1m\napps:\n  hello:\n"+
		"    listen: [\"%s\"]\n    start: \"exec python3 app.py\"\n    workers: 2\n    drain_timeout: 10s\n"+
		"    health: {http: /healthz, min_uptime: 1s, timeout: 30s}\n", d.gitAddr, d.appAddr)
	if err := os.WriteFile(d.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d.start()
	t.Cleanup(d.stop)
	r := &appRepo{t: t, dir: filepath.Join(t.TempDir(), "slowdrain")}
	if err := os.CopyFS(r.dir, os.DirFS("testdata/slowdrain")); err != nil {
		t.Fatal(err)
	}
	r.git("init", "-q", "-b", "main")
	r.commit("v1", nil)
	return d, r
}

// draining is the app's workers that drain, by release.
func (d *daemon) draining() map[string][]supervisor.WorkerStatus {
	out := map[string][]supervisor.WorkerStatus{}
	for _, w := range d.status().Workers {
		if w.State == supervisor.Draining {
			out[w.Release] = append(out[w.Release], w)
		}
	}
	return out
}

// TestSwapsReturnAtTheCutOverAndBlueDrainsInTheBackground is issue 10's
// repro: with an app that takes 3s to drain and min_uptime 1s, a rollback
// returns once the old release is live again, not after the drain: the
// workers it replaced are still draining when it returns, shown so in
// status with the time left before they are killed, and a push started
// right away does not wait for them. The ledger has the deploy as soon as
// it returned: a kill -9 during the drain that follows loses nothing.
func TestSwapsReturnAtTheCutOverAndBlueDrainsInTheBackground(t *testing.T) {
	d, r := slowDrainDaemon(t)
	r.mustPush(d)
	r.commit("v2", map[string]string{"v2": "2"})
	out := r.mustPush(d)
	if !strings.Contains(out, "v1 draining in the background (up to 10s)") {
		t.Fatalf("the push does not say v1 drains in the background:\n%s", out)
	}

	start := time.Now()
	out = d.mustCLI("rollback", "hello")
	took := time.Since(start)
	dr := d.draining()
	if len(dr["v2"]) != 2 {
		t.Fatalf("rollback returned after %s, and v2's workers are not draining: %+v\n%s", took, d.status().Workers, out)
	}
	for _, w := range dr["v2"] {
		if left := time.Until(w.KillAt); left <= 0 || left > 10*time.Second {
			t.Errorf("v2 worker %d: killed in %s", w.Index, left)
		}
	}
	t.Logf("rollback returned in %s with v2 still draining:\n%s", took, out)
	if took >= time.Second+3*time.Second {
		t.Errorf("rollback took %s: as long as min_uptime and the drain", took)
	}
	cliStart := time.Now()
	st := d.mustCLI("status")
	t.Logf("deployer status took %s", time.Since(cliStart))
	if !strings.Contains(st, "draining (killed in") {
		t.Errorf("status does not show the drain:\n%s", st)
	}
	if body, err := d.get(); err != nil || body != "hello from v1\n" {
		t.Fatalf("after the rollback: %q %v", body, err)
	}

	// A push right away: v2 still drains, and the push does not wait.
	r.commit("v3", map[string]string{"v3": "3"})
	out = r.mustPush(d)
	if strings.Contains(out, "waiting") || strings.Contains(out, "holds") {
		t.Errorf("the push waited:\n%s", out)
	}
	if body, _ := d.get(); body != "hello from v3\n" {
		t.Fatalf("after the push: %q", body)
	}

	// kill -9 while v1 drains: the ledger already has v3's deploy.
	if len(d.draining()["v1"]) == 0 {
		t.Fatal("v1 is not draining after the push returned")
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	hist, _ := os.ReadFile(filepath.Join(d.dir, "data/apps/hello/history.jsonl"))
	if !strings.Contains(string(hist), `"event":"deploy","release":"v3"`) {
		t.Fatalf("v3's deploy is not in the ledger after a kill -9 during the drain:\n%s", hist)
	}
	d.start()
	testutil.WaitFor(t, 20*time.Second, "v1's workers to finish their drain", func() bool {
		st, err := d.client().Status(context.Background())
		if err != nil {
			return false
		}
		for _, w := range st[0].Workers {
			if w.Release == "v1" {
				return false
			}
		}
		return true
	})
}

// unevenDrainApp is testdata/slowdrain's app, with worker 0 draining in 4s
// and worker 1 in 9s.
func unevenDrainApp(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/slowdrain/app.py")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Replace(string(b), "time.sleep(3)", `time.sleep(4 if os.environ["DEPLOYER_WORKER"] == "0" else 9)`, 1)
}

// TestAfterAKill9DuringTheDrainTheNextDaemonStartsNoWorkerOfTheOldRelease:
// the daemon is killed while v1 drains, and restarted once v1's worker 0
// has ended its drain, worker 1 not yet. The next daemon finishes worker
// 1's drain, and does not start worker 0 of v1 again on the app's socket.
func TestAfterAKill9DuringTheDrainTheNextDaemonStartsNoWorkerOfTheOldRelease(t *testing.T) {
	d, r := slowDrainDaemon(t)
	r.commit("v1", map[string]string{"app.py": unevenDrainApp(t)})
	r.mustPush(d)
	var v1 []int
	for _, w := range d.status().Workers {
		v1 = append(v1, w.PID)
	}
	r.commit("v2", map[string]string{"v2": "2"})
	r.mustPush(d)
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	testutil.WaitFor(t, 10*time.Second, "v1's worker 0 to end its drain", func() bool { return !alive(v1[0]) })
	if !alive(v1[1]) {
		t.Fatal("v1's worker 1 ended its drain too soon for the test")
	}
	d.start()
	for _, w := range d.status().Workers {
		if w.Release == "v1" && w.PID != v1[1] {
			t.Fatalf("the next daemon started v1 again: %+v (v1 was %v)", w, v1)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "v1's worker 1 to end its drain", func() bool { return !alive(v1[1]) })
	if body, err := d.get(); err != nil || body != "hello from v2\n" {
		t.Fatalf("after the drain: %q %v", body, err)
	}
}
