package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
	d := newDaemon(t, "")
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

// TestDeployUnderLoadLosesNoRequest pushes new releases while clients keep
// sending requests on keep-alive connections: every request must succeed,
// and after the push every answer comes from the new release.
func TestDeployUnderLoadLosesNoRequest(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)

	var ok, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := getWith(c, "http://"+d.appAddr+"/"); err != nil {
					failed.Add(1)
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for i, msg := range []string{"two", "three"} {
		r.commit(msg, map[string]string{"message.txt": msg})
		r.mustPush(d)
		want := "hello from v" + string(rune('2'+i))
		for j := 0; j < 20; j++ {
			if body, err := d.get(); err != nil || !strings.HasPrefix(body, want) {
				t.Fatalf("after push %d got %q, %v; want %s", i+2, body, err, want)
			}
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("requests during 2 deploys: %d ok, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed during deploys, e.g. %v", failed.Load(), failures[:min(5, len(failures))])
	}
	if ok.Load() < 100 {
		t.Fatalf("only %d requests ran: the load proved nothing", ok.Load())
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
	waitFor(t, 30*time.Second, "workers after restart", func() bool { return len(d.workerPIDs()) == 2 })
	body, err := d.get()
	if err != nil || !strings.HasPrefix(body, "hello from v2") {
		t.Fatalf("after restart: %q %v", body, err)
	}
	if d.branch() != rev {
		t.Fatal("branch changed across restart")
	}
}
