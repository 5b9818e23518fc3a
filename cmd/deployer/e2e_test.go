package main

import (
	"net/http"
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
)

func TestPushDeploysEachRevisionAndStreamsProgress(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	out := r.mustPush(d)
	for _, step := range []string{"remote: -----> Building: go build", "Preflight passed", "Green is up", "Cut-over: v1 is live", "Deployed v1"} {
		if !strings.Contains(out, step) {
			t.Errorf("push output lacks %q:\n%s", step, out)
		}
	}
	body, err := d.get()
	if err != nil || !strings.HasPrefix(body, "hello from v1") {
		t.Fatalf("v1 not served: %q %v", body, err)
	}

	rev := r.commit("second", map[string]string{"message.txt": "second"})
	r.mustPush(d)
	body, err = d.get()
	if err != nil || !strings.HasPrefix(body, "hello from v2") || !strings.Contains(body, "second") {
		t.Fatalf("v2 not served: %q %v", body, err)
	}
	if d.branch() != rev {
		t.Fatalf("server branch %s, want %s", d.branch(), rev)
	}
	if fi, err := os.Stat(d.socket()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	st := d.status()
	if st.Live != "v2" || len(st.Workers) != 2 {
		t.Fatalf("status: %+v", st)
	}
	for _, w := range st.Workers {
		if w.Release != "v2" || w.State != "running" {
			t.Fatalf("worker: %+v", w)
		}
	}
	// The build log and the release metadata are on disk.
	if b, err := os.ReadFile(filepath.Join(d.dir, "data/apps/hello/logs/builds/v2.log")); err != nil || !strings.Contains(string(b), "Build done") {
		t.Fatalf("build log: %q %v", b, err)
	}
	if target, err := os.Readlink(filepath.Join(d.dir, "data/apps/hello/current")); err != nil || target != "releases/v2" {
		t.Fatalf("current -> %q, %v", target, err)
	}
	// git clone from the same URL works.
	clone := filepath.Join(t.TempDir(), "clone")
	r.git("clone", "-q", d.url(testToken), clone)
	if _, err := os.Stat(filepath.Join(clone, "message.txt")); err != nil {
		t.Fatal("clone lacks the pushed file")
	}
}

// assertFailedPushKeepsLive pushes a broken revision and checks the push is
// rejected with reason, the branch did not move and v1 still serves.
func assertFailedPushKeepsLive(t *testing.T, d *daemon, r *appRepo, reason string) {
	t.Helper()
	before := d.branch()
	out, err := r.push(d.url(testToken))
	if err == nil {
		t.Fatalf("broken push accepted:\n%s", out)
	}
	if !strings.Contains(out, "! [remote rejected] main -> main (deploy failed: "+reason) {
		t.Fatalf("push output lacks the rejection with %q:\n%s", reason, out)
	}
	if d.branch() != before {
		t.Fatalf("server branch moved to %s on a failed deploy", d.branch())
	}
	for i := 0; i < 10; i++ {
		body, err := d.get()
		if err != nil || !strings.HasPrefix(body, "hello from v1") {
			t.Fatalf("live app changed after failed deploy: %q %v", body, err)
		}
	}
	if st := d.status(); st.Live != "v1" || len(st.Workers) != 2 || st.Workers[0].Release != "v1" {
		t.Fatalf("status after failed deploy: %+v", st)
	}
}

func TestFailedBuildRejectsPushAndKeepsLiveRelease(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	pids := d.workerPIDs()
	r.commit("broken build", map[string]string{"broken.go": "package main\nthis does not compile\n"})
	assertFailedPushKeepsLive(t, d, r, "build")
	if got := d.workerPIDs(); len(got) != 2 || got[0] != pids[0] || got[1] != pids[1] {
		t.Fatalf("live workers were touched: %v -> %v", pids, got)
	}
	b, _ := os.ReadFile(filepath.Join(d.dir, "data/apps/hello/releases/v2.json"))
	if !strings.Contains(string(b), `"status": "failed"`) {
		t.Fatalf("v2 not recorded as failed: %s", b)
	}
}

func TestFailedHealthCheckRejectsPushAndKeepsLiveRelease(t *testing.T) {
	d := newDaemon(t, failingHealth)
	r := newAppRepo(t)
	r.mustPush(d)
	main, err := os.ReadFile(filepath.Join(r.dir, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	sick := strings.Replace(string(main), `fmt.Fprintln(w, "ok")`, `w.WriteHeader(http.StatusInternalServerError)`, 1)
	if sick == string(main) {
		t.Fatal("could not make the health check fail")
	}
	r.commit("unhealthy", map[string]string{"main.go": sick})
	assertFailedPushKeepsLive(t, d, r, "preflight")
}

func TestCrashingReleaseRejectsPushAndKeepsLiveRelease(t *testing.T) {
	// No preflight: green itself must catch a release that dies at start.
	d := newDaemon(t, "    health: {preflight: false, min_uptime: 1s, timeout: 30s}\n")
	r := newAppRepo(t)
	r.mustPush(d)
	r.commit("crash at start", map[string]string{"crash.go": "package main\n\nfunc init() { panic(\"boom at start\") }\n"})
	assertFailedPushKeepsLive(t, d, r, "green")
}

func TestPushWithoutValidCredentialsIsRefused(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	for name, url := range map[string]string{
		"no token":    d.url(""),
		"wrong token": d.url("wrong"),
	} {
		out, err := r.push(url)
		if err == nil || !strings.Contains(out, "Authentication failed") && !strings.Contains(out, "could not read Username") {
			t.Errorf("%s: push not refused: %v\n%s", name, err, out)
		}
	}
	if d.branch() != "" {
		t.Fatal("a refused push wrote the branch")
	}
	for name, c := range map[string]struct {
		user, pass, path string
		code             int
	}{
		"no token":    {"", "", "/hello.git/info/refs?service=git-receive-pack", 401},
		"wrong token": {"alice", "nope", "/hello.git/info/refs?service=git-receive-pack", 401},
		"unknown app": {"alice", testToken, "/other.git/info/refs?service=git-receive-pack", 404},
		"fetch too":   {"", "", "/hello.git/info/refs?service=git-upload-pack", 401},
	} {
		req, _ := http.NewRequest("GET", "http://"+d.gitAddr+c.path, nil)
		if c.user != "" {
			req.SetBasicAuth(c.user, c.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s: HTTP %d, want %d", name, resp.StatusCode, c.code)
		}
	}
	if _, err := os.Stat(filepath.Join(d.dir, "data/apps/other")); err == nil {
		t.Fatal("an unknown app got a directory")
	}
	if !strings.Contains(d.log.String(), "authentication failed") {
		t.Fatal("failed authentication not logged")
	}
}

// TestDeployRollbackAndReloadUnderLoadLoseNoRequest: clients keep sending
// requests on keep-alive connections through two deploys, a rollback and a
// SIGUSR2 reload. Every request must succeed; after each step every answer
// comes from the release that step made live; after the reload every worker
// pid is new.
func TestDeployRollbackAndReloadUnderLoadLoseNoRequest(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)

	l := testutil.StartLoad(t, "http://"+d.appAddr+"/", 16)
	for _, msg := range []string{"two", "three"} {
		r.commit(msg, map[string]string{"message.txt": msg})
		r.mustPush(d)
	}
	d.serves("v3")
	d.mustCLI("rollback", "hello")
	d.serves("v2")

	before := d.workerPIDs()
	if err := d.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "SIGUSR2 to replace every worker", func() bool {
		st := d.status()
		if len(st.Workers) != 2 {
			return false
		}
		for _, w := range st.Workers {
			if w.State != "running" || slices.Contains(before, w.PID) {
				return false
			}
		}
		return true
	})
	d.serves("v2")

	l.Finish(t, "2 deploys, a rollback and a reload", 100)
	pid, _ := os.ReadFile(filepath.Join(d.dir, "data/deployer.pid"))
	if strings.TrimSpace(string(pid)) != strconv.Itoa(d.cmd.Process.Pid) {
		t.Fatalf("pid file %q, daemon pid %d", pid, d.cmd.Process.Pid)
	}
}

func getWith(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var sb strings.Builder
	if _, err := ioCopy(&sb, resp); err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", &statusError{resp.StatusCode}
	}
	return sb.String(), nil
}

func TestDaemonRestartServesTheLiveReleaseAgain(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	rev := r.commit("second", map[string]string{"message.txt": "second"})
	r.mustPush(d)
	d.stop()
	d.start()
	testutil.WaitFor(t, 30*time.Second, "workers after restart", func() bool { return len(d.workerPIDs()) == 2 })
	body, err := d.get()
	if err != nil || !strings.HasPrefix(body, "hello from v2") {
		t.Fatalf("after restart: %q %v", body, err)
	}
	if d.branch() != rev {
		t.Fatal("branch changed across restart")
	}
}

// TestSecondPushWaitsForTheLockThenDeploys: while one deploy builds, a
// second push to the same app waits, says who holds the lock, and deploys
// once the first is done.
func TestSecondPushWaitsForTheLockThenDeploys(t *testing.T) {
	gate := t.TempDir()
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	// From here on, builds announce themselves and wait for the gate.
	d.stop()
	cfg, _ := os.ReadFile(d.config)
	slow := strings.Replace(string(cfg), `build: "go build -o bin/hello ."`,
		`build: "touch `+gate+`/building; while [ ! -e `+gate+`/open ]; do sleep 0.05; done; go build -o bin/hello ."`, 1)
	os.WriteFile(d.config, []byte(slow), 0o644)
	d.start()

	revA := r.commit("A", map[string]string{"message.txt": "A"})
	first := make(chan error, 1)
	go func() { _, err := r.push(d.url(testToken)); first <- err }()
	testutil.WaitFor(t, 30*time.Second, "the first build to start", func() bool {
		_, err := os.Stat(filepath.Join(gate, "building"))
		return err == nil
	})
	// A second working copy builds on A, as a teammate who pulled would.
	r2 := &appRepo{t: t, dir: filepath.Join(t.TempDir(), "hello2")}
	r.git("clone", "-q", r.dir, r2.dir)
	revB := r2.commit("B", map[string]string{"message.txt": "B"})
	var out lockedBuffer
	second := make(chan error, 1)
	go func() {
		cmd := exec.Command("git", "push", d.url(testToken), "main")
		cmd.Dir, cmd.Stdout, cmd.Stderr = r2.dir, &out, &out
		second <- cmd.Run()
	}()
	testutil.WaitFor(t, 30*time.Second, "the second push to report the lock holder", func() bool {
		return strings.Contains(out.String(), "Waiting for the deploy lock of hello: held by deploy of "+revA[:7]+" pushed by alice")
	})
	os.WriteFile(filepath.Join(gate, "open"), nil, 0o644)
	if err := <-first; err != nil {
		t.Fatalf("first push: %v", err)
	}
	if err := <-second; err != nil {
		t.Fatalf("second push: %v\n%s", err, out.String())
	}
	if d.branch() != revB {
		t.Fatalf("branch %s, want B %s", d.branch(), revB)
	}
	if body, err := d.get(); err != nil || !strings.HasPrefix(body, "hello from v3") || !strings.Contains(body, "B") {
		t.Fatalf("got %q %v, want v3 with B", body, err)
	}
}

// TestPushedTreeCannotWriteOutsideTheRelease pushes trees crafted with git
// plumbing — a symlink to an outside directory plus a directory of the same
// name beneath which a file would land, and a ".." entry — and checks that
// each push is rejected, no release is made and nothing is written outside.
func TestPushedTreeCannotWriteOutsideTheRelease(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	outside := t.TempDir()
	hash := func(stdin, args string) string {
		cmd := exec.Command("sh", "-c", "git "+args)
		cmd.Dir, cmd.Stdin = r.dir, strings.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("git %s: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	blob := hash("pwned\n", "hash-object -w --stdin")
	link := hash(outside, "hash-object -w --stdin")
	inner := hash("100644 blob "+blob+"\tpwned\n", "mktree")
	base := r.git("rev-parse", "HEAD^{tree}")
	baseEntries := r.git("ls-tree", base)
	for name, extra := range map[string]string{
		"symlink then directory": "120000 blob " + link + "\tevil\n040000 tree " + inner + "\tevil\n",
		"dot-dot entry":          "040000 tree " + inner + "\t..\n",
	} {
		tree := hash(baseEntries+"\n"+extra, "mktree")
		commit := hash("", "commit-tree "+tree+" -p HEAD -m crafted")
		cmd := exec.Command("git", "push", d.url(testToken), commit+":refs/heads/main")
		cmd.Dir = r.dir
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("%s: crafted push accepted:\n%s", name, out)
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Fatalf("%s: wrote outside the release: %v", name, entries)
		}
	}
	if _, err := os.Stat(filepath.Join(d.dir, "data/apps/hello/releases/v2")); err == nil {
		t.Fatal("a crafted push made a release")
	}
	if body, err := d.get(); err != nil || !strings.HasPrefix(body, "hello from v1") {
		t.Fatalf("live app changed: %q %v", body, err)
	}
}
