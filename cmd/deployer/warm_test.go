package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// warmApp serves on fd 3 and counts the warm-up requests (by their
// User-Agent) it answered; GET / says how many. A release with the file
// crash-on-warmup exits at its 10th (the count is
// locked: the warm-up comes over several connections at once); one with hang-on-warmup writes its pid
// to $MARK at its first and never answers it (preflight's probe, another
// User-Agent, is answered, so the release passes the health gate). The
// live worker keeps accepting beside the new one: the warm-up must find
// the new one's connections itself.
const warmApp = `import os, socket, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

warm = 0
lock = threading.Lock()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        global warm
        if self.headers.get("User-Agent") == "deployer-warmup":
            with lock:
                warm += 1
                n = warm
            if os.path.exists("crash-on-warmup") and n >= 10:
                os._exit(3)
            if os.path.exists("hang-on-warmup"):
                with open(os.environ["MARK"], "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(3600)
        body = ("%s pid=%d warm=%d\n" % (os.environ["DEPLOYER_RELEASE"], os.getpid(), warm)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, *args):
        pass

srv = ThreadingHTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
srv.socket = socket.socket(fileno=3)
srv.serve_forever()
`

// warmDaemon runs warmApp with one worker and health.warmup: 50, and
// deploys v1.
func warmDaemon(t *testing.T) (*daemon, *appRepo) {
	t.Helper()
	return warmDaemonWith(t, "30s", "")
}

// warmDaemonWith is warmDaemon with health.timeout and the file a release
// that hangs on the warm-up writes its pid to ($MARK).
func warmDaemonWith(t *testing.T, timeout, mark string) (*daemon, *appRepo) {
	t.Helper()
	requireCommands(t, "python3")
	d := startAppDaemon(t, map[string]any{
		"start":         "exec python3 app.py",
		"workers":       1,
		"drain_timeout": "2s",
		"env":           map[string]string{"MARK": mark},
		"health":        map[string]any{"http": "/healthz", "min_uptime": "300ms", "timeout": timeout, "warmup": 50},
	})
	r := &appRepo{t: t, dir: filepath.Join(t.TempDir(), "warm")}
	if err := os.Mkdir(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r.git("init", "-q", "-b", "main")
	r.commit("v1", map[string]string{"app.py": warmApp})
	out := r.mustPush(d)
	if !strings.Contains(out, "Warm-up: 50 GET /healthz on the live socket, 50 answered 2xx") {
		t.Fatalf("the first push does not say it warmed v1 up:\n%s", out)
	}
	if body, err := d.get(); err != nil || !strings.Contains(body, "v1 ") {
		t.Fatalf("v1: GET / = %q, %v", body, err)
	}
	return d, r
}

// TestGreenIsWarmedOnTheLiveSocketBeforeTheCutOver: with health.warmup,
// once green is up the daemon sends that many GETs of the health path per
// green worker to the live socket, and only then cuts over. The old worker
// is idle and keeps accepting, so it takes its share of new connections;
// still every warm-up request must reach the new one, and it has answered
// them all before it answers its first live request.
func TestGreenIsWarmedOnTheLiveSocketBeforeTheCutOver(t *testing.T) {
	d, r := warmDaemon(t)
	r.commit("v2", nil)
	out := r.mustPush(d)
	warmAt, cutAt := strings.Index(out, "Warm-up: 50 GET /healthz on the live socket, 50 answered 2xx"), strings.Index(out, "Cut-over: v2 is live")
	if warmAt < 0 || cutAt < warmAt {
		t.Fatalf("the push does not warm v2 up before its cut-over:\n%s", out)
	}
	if !regexp.MustCompile(`answered by green's workers: 50, over [1-9]\d* connections`).MatchString(out) {
		t.Fatalf("the push does not say v2's worker answered the warm-up:\n%s", out)
	}
	if !regexp.MustCompile(`paced: green held to \d+\.\d\d cores, (half of the \d+\.\d\d cores idle|the least a warm-up gets)`).MatchString(out) {
		t.Fatalf("the push does not say how the warm-up was paced:\n%s", out)
	}
	t.Log(out[warmAt:cutAt])
	var body string
	testutil.WaitFor(t, 15*time.Second, "v2 to answer", func() bool {
		var err error
		body, err = d.get()
		return err == nil && strings.HasPrefix(body, "v2 ")
	})
	if !strings.HasSuffix(strings.TrimSpace(body), "warm=50") {
		t.Fatalf("v2's worker answered %q: want all 50 warm-up requests answered before its first live one", body)
	}
	t.Log(strings.TrimSpace(body))
}

// TestAReleaseThatFallsOverInItsWarmUpNeverGoesLive: a green worker that
// exits under its first requests fails the deploy before the cut-over, and
// the live release stays.
func TestAReleaseThatFallsOverInItsWarmUpNeverGoesLive(t *testing.T) {
	d, r := warmDaemon(t)
	r.commit("v2 falls over", map[string]string{"crash-on-warmup": ""})
	out, err := r.push(d.url(testToken))
	if err == nil {
		t.Fatalf("push accepted:\n%s", out)
	}
	if !strings.Contains(out, "worker 0 exited during the warm-up") || !strings.Contains(out, "the live release is unchanged") {
		t.Fatalf("the rejection does not say why:\n%s", out)
	}
	if cur := d.status().Live; cur != "v1" {
		t.Fatalf("live release %q after a failed warm-up, want v1\n%s", cur, out)
	}
	t.Logf("the rejection:\n%s", out)
}
