package main

import (
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// TestRollbackIsFastNeedsNoRebuildAndMovesTheBranch: with a deliberately slow
// build of v2, rollback serves v1 in less time than that build alone took,
// makes no new release, and moves the branch back so that pushing v2 again
// redeploys it.
func TestRollbackIsFastNeedsNoRebuildAndMovesTheBranch(t *testing.T) {
	d := newDaemon(t, "")
	cfg, _ := os.ReadFile(d.config)
	os.WriteFile(d.config, []byte(strings.Replace(string(cfg), `build: "go build -o bin/hello ."`,
		`build: "go build -o bin/hello . && if [ $DEPLOYER_RELEASE = v2 ]; then sleep 4; fi"`, 1)), 0o644)
	d.stop()
	d.start()
	r := newAppRepo(t)
	rev1 := r.git("rev-parse", "HEAD")
	r.mustPush(d)
	rev2 := r.commit("second", map[string]string{"message.txt": "second"})
	r.mustPush(d)
	d.serves("v2")
	build := d.release("v2")["build_seconds"].(float64)

	start := time.Now()
	out := d.mustCLI("rollback", "hello")
	took := time.Since(start)
	d.serves("v1")
	if took.Seconds() >= build {
		t.Errorf("rollback took %s, not less than the build alone (%.1fs)", took, build)
	}
	if !strings.Contains(out, "Rolled back to v1") || strings.Contains(out, "Building") {
		t.Fatalf("rollback output:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(d.dir, "data/apps/hello/releases/v3")); err == nil {
		t.Fatal("rollback made a new release")
	}
	if d.branch() != rev1 {
		t.Fatalf("branch %s after rollback, want v1's %s", d.branch(), rev1)
	}
	if st := d.release("v2")["status"]; st != "rolled-back" {
		t.Fatalf("v2 status %v, want rolled-back", st)
	}
	rel := d.mustCLI("releases", "hello")
	if !strings.Contains(rel, "*  v1") || !strings.Contains(rel, "rolled-back") {
		t.Fatalf("releases:\n%s", rel)
	}

	// The newer commit pushed again is an ordinary fast-forward: v3.
	r.mustPush(d)
	d.serves("v3")
	if d.branch() != rev2 {
		t.Fatal("pushing v2 again did not move the branch to it")
	}

	// --to picks any release that was live.
	d.mustCLI("rollback", "hello", "--to", "v1")
	d.serves("v1")
	if d.branch() != rev1 {
		t.Fatal("rollback --to v1 did not move the branch")
	}
	hist, _ := os.ReadFile(filepath.Join(d.dir, "data/apps/hello/history.jsonl"))
	if strings.Count(string(hist), `"event":"rollback"`) != 2 {
		t.Fatalf("history:\n%s", hist)
	}
	// deploy rebuilds a revision already on the server, without a push.
	out = d.mustCLI("deploy", "hello", rev2[:8])
	if !strings.Contains(out, "Building") || !strings.Contains(out, "Deployed v4") {
		t.Fatalf("deploy output:\n%s", out)
	}
	d.serves("v4")
	if d.branch() != rev2 || d.release("v4")["revision"] != rev2 {
		t.Fatal("deploy of a revision did not move the branch to it")
	}
	d.mustCLI("rollback", "hello", "--to", "v1")
	// Asking for the live one, or a release that does not exist, is an error.
	if out, err := d.cli("rollback", "hello", "--to", "v1"); err == nil || !strings.Contains(out, "already live") {
		t.Fatalf("rollback to the live release: %v %s", err, out)
	}
	if out, err := d.cli("rollback", "hello", "--to", "v9"); err == nil || !strings.Contains(out, "not found") {
		t.Fatalf("rollback to a missing release: %v %s", err, out)
	}
}

// TestRollbackToAReleaseThatIsNowUnhealthyIsRefused: v1's health check
// depends on a file outside the release; once it fails, rolling back to v1
// is refused, v2 keeps serving and the branch stays.
func TestRollbackToAReleaseThatIsNowUnhealthyIsRefused(t *testing.T) {
	sick := filepath.Join(t.TempDir(), "sick")
	d := newDaemon(t, failingHealth)
	r := newAppRepo(t)
	main, _ := os.ReadFile(filepath.Join(r.dir, "main.go"))
	fragile := strings.Replace(string(main), `fmt.Fprintln(w, "ok")`,
		`if _, err := os.Stat(`+"`"+sick+"`"+`); err == nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")`, 1)
	r.commit("fragile v1", map[string]string{"main.go": fragile})
	r.mustPush(d)
	r.commit("v2", map[string]string{"message.txt": "two"})
	rev2 := r.commit("v2", nil)
	r.mustPush(d)
	os.WriteFile(sick, nil, 0o644)
	out, err := d.cli("rollback", "hello")
	if err == nil {
		t.Fatalf("rollback to an unhealthy release succeeded:\n%s", out)
	}
	if !strings.Contains(out, "preflight") || !strings.Contains(out, "503") {
		t.Fatalf("rollback refusal does not say why:\n%s", out)
	}
	d.serves("v2")
	if d.branch() != rev2 {
		t.Fatal("branch moved on a refused rollback")
	}
	if st := d.release("v1")["status"]; st != "retired" {
		t.Fatalf("v1 status %v after refused rollback, want retired", st)
	}
}

// TestScheduledCleanupPrunesWhileServingAndRollbackStillWorks.
func TestScheduledCleanupPrunesWhileServingAndRollbackStillWorks(t *testing.T) {
	d := newDaemon(t, "    keep_releases: 1\n    cleanup_schedule: \"@every 1s\"\n")
	r := newAppRepo(t)
	r.mustPush(d)
	for _, m := range []string{"two", "three", "four"} {
		r.commit(m, map[string]string{"message.txt": m})
		r.mustPush(d)
	}
	r.commit("broken", map[string]string{"broken.go": "package main\nnope\n"})
	r.push(d.url(testToken)) // v5 fails
	testutil.WaitFor(t, 30*time.Second, "the schedule to prune v1 and v2", func() bool {
		return d.release("v1")["status"] == "pruned" && d.release("v2")["status"] == "pruned"
	})
	for _, id := range []string{"v1", "v2"} {
		if _, err := os.Stat(filepath.Join(d.dir, "data/apps/hello/releases", id)); err == nil {
			t.Fatalf("%s's tree is still there", id)
		}
	}
	// Kept: live v4, previous good v3, newest failed v5.
	for _, id := range []string{"v3", "v4", "v5"} {
		if _, err := os.Stat(filepath.Join(d.dir, "data/apps/hello/releases", id)); err != nil {
			t.Fatalf("%s was pruned: %v", id, err)
		}
	}
	d.serves("v4")
	d.mustCLI("rollback", "hello")
	d.serves("v3")
	hist, _ := os.ReadFile(filepath.Join(d.dir, "data/apps/hello/history.jsonl"))
	if !strings.Contains(string(hist), `"event":"cleanup","by":"schedule","detail":"pruned v1`) ||
		!strings.Contains(string(hist), ", freed ") {
		t.Fatalf("cleanup not in the ledger:\n%s", hist)
	}
	if out := d.mustCLI("cleanup", "hello", "--dry-run", "--keep", "0"); !strings.Contains(out, "nothing to prune") && !strings.Contains(out, "would prune v4") {
		t.Fatalf("dry run:\n%s", out)
	}
}

// TestLogsShowWorkerOutputAndBuildLogs.
func TestLogsShowWorkerOutputAndBuildLogs(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	chatty := withMain(t, r, `mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {`,
		`mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("served %s", r.URL.Path)`)
	r.commit("log requests", map[string]string{"main.go": chatty})
	r.mustPush(d)
	if out := d.mustCLI("logs", "hello", "--build", "v1"); !strings.Contains(out, "Building: go build") || !strings.Contains(out, "Deployed v1") {
		t.Fatalf("build log:\n%s", out)
	}
	// Follow from a known line, then make the app print another.
	http.Get("http://" + d.appAddr + "/first")
	cmd := exec.Command(daemonBin, "logs", "hello", "-f", "-n", "1000", "-c", d.config)
	var out lockedBuffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	testutil.WaitFor(t, 10*time.Second, "logs -f to print what was there", func() bool {
		return strings.Contains(out.String(), "served /first")
	})
	http.Get("http://" + d.appAddr + "/followed")
	testutil.WaitFor(t, 10*time.Second, "the request to show in logs -f", func() bool {
		return strings.Contains(out.String(), "served /followed") && strings.Contains(out.String(), "[v1 w")
	})
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("logs -f did not exit cleanly on Ctrl-C: %v", err)
	}
	if tail := d.mustCLI("logs", "hello", "-n", "1"); strings.Count(tail, "\n") != 1 || !strings.Contains(tail, "served /followed") {
		t.Fatalf("logs -n 1:\n%q", tail)
	}
}

// TestDeployAfterAFailedFirstPush: the first push fails (its build needs a
// file the operator has not made yet), so the branch was never made;
// `deployer deploy hello` then deploys the revision that push brought.
func TestDeployAfterAFailedFirstPush(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "fixed")
	d := newDaemon(t, "")
	cfg, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	d.stop()
	os.WriteFile(d.config, []byte(strings.Replace(string(cfg), `build: "go build -o bin/hello ."`,
		`build: "test -f `+flag+` && go build -o bin/hello ."`, 1)), 0o644)
	d.start()
	r := newAppRepo(t)
	if out, err := r.push(d.url(testToken)); err == nil {
		t.Fatalf("the first push deployed with its build failing:\n%s", out)
	}
	os.WriteFile(flag, nil, 0o644)
	// Run as under sudo: the ledger names the person and the user.
	cmd := exec.Command(daemonBin, "deploy", "hello", "-c", d.config)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", "SUDO_USER=carol")
	b, err := cmd.CombinedOutput()
	if out := string(b); err != nil || !strings.Contains(out, "main was never deployed; deploying the last revision pushed to it") {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	d.serves("v2")
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	want := me.Username
	if os.Geteuid() == 0 {
		want = "carol (as " + me.Username + ")"
	}
	if by := d.release("v2")["pusher"]; by != want {
		t.Fatalf("v2 was deployed by %q, want %q", by, want)
	}
}
