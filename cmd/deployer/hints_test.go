package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hintApp is a Python app that fails preflight the ways users' first tries
// do; mode.txt says which. It prints to stdout, as apps do, so the
// rejection can show its last lines.
const hintApp = `import http.server, os, socket, sys
mode = open("mode.txt").read().strip()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz" and mode == "redirect":
            self.send_response(302); self.send_header("Location", "/login")
        elif self.path == "/healthz" and mode == "missing":
            self.send_response(404)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a):
        print("request", self.path, flush=True)
print("starting in mode", mode, flush=True)
if mode == "own" or os.environ.get("LISTEN_PID") != str(os.getpid()):
    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    print("serving on", srv.server_address, flush=True)
else:
    srv = http.server.HTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
    srv.socket = socket.socket(fileno=3)
srv.serve_forever()
`

// hintCase is a push that must be rejected with the lines want.
type hintCase struct {
	name  string
	files map[string]string
	want  []string
}

// TestAWrongHealthPathFailsAtOnceAndSaysSo: a health path that answers 404,
// or redirects, is not retried until health.timeout (5 minutes here): the
// push is rejected after a few answers, saying what to change.
func TestAWrongHealthPathFailsAtOnceAndSaysSo(t *testing.T) {
	pushHintCases(t, "5m", []hintCase{
		{name: "health path 404", files: map[string]string{"mode.txt": "missing"},
			want: []string{"GET /healthz: HTTP 404, ", " times in a row", "hint: GET /healthz answers 404: the app has no such path"}},
		{name: "health path redirects", files: map[string]string{"mode.txt": "redirect"},
			want: []string{"HTTP 302 (redirect to /login, not followed)",
				"hint: GET /healthz redirects to /login (HTTP 302), and the probe does not follow redirects"}},
	})
}

// TestAnAppOnItsOwnPortIsToldToUseFD3: an app that binds a port of its own
// instead of serving fd 3, and one that does so because a shell in between
// made LISTEN_PID name another process, are rejected with the hint and the
// app's last lines of output.
func TestAnAppOnItsOwnPortIsToldToUseFD3(t *testing.T) {
	pushHintCases(t, "3s", []hintCase{
		{name: "binds its own port", files: map[string]string{"mode.txt": "own"},
			want: []string{"hint: python3 (pid ", ") listens on 127.0.0.1:", "itself: it must serve the socket it inherits as fd 3",
				"lines of output (all of it: deployer logs hello):", "| starting in mode own"}},
		// start.sh runs python3 without exec: python3 is a child of the
		// shell, so LISTEN_PID names the shell, and the app binds its own.
		{name: "LISTEN_PID of a shell", files: map[string]string{"mode.txt": "good", "start.sh": "python3 app.py\n",
			"Procfile": "web: sh start.sh\n"},
			want: []string{"ignored the inherited socket because LISTEN_PID is ", "start it with exec"}},
	})
}

// pushHintCases deploys hintApp as v1 on a daemon with the given
// health.timeout, then pushes each case, which must be rejected with its
// lines; each case starts again from v1.
func pushHintCases(t *testing.T, timeout string, cases []hintCase) {
	t.Helper()
	requireCommands(t, "python3")
	d := startAppDaemon(t, map[string]any{
		"workers": 1,
		"health":  map[string]any{"http": "/healthz", "min_uptime": "300ms", "timeout": timeout},
	})
	r := &appRepo{t: t, dir: filepath.Join(t.TempDir(), "py")}
	os.MkdirAll(r.dir, 0o755)
	r.git("init", "-q", "-b", "main")
	r.commit("good", map[string]string{"app.py": hintApp, "mode.txt": "good", "Procfile": "web: python3 app.py\n"})
	r.mustPush(d)
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			r.commit(c.name, c.files)
			defer r.git("reset", "-q", "--hard", "HEAD~1")
			out, err := r.push(d.url(testToken))
			if err == nil {
				t.Fatalf("push accepted:\n%s", out)
			}
			t.Logf("the rejection:\n%s", out)
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("the rejection lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "preflight: preflight:") {
				t.Errorf("doubled prefix:\n%s", out)
			}
		})
	}
}

// TestGunicornBindFDIsExplained: gunicorn's own docs suggest
// --bind fd://3, which crashes under socket activation; the rejection says
// to drop it.
func TestGunicornBindFDIsExplained(t *testing.T) {
	if _, err := exec.LookPath("gunicorn"); err != nil {
		t.Skip("gunicorn is not installed (.ci/run installs it)")
	}
	d := startAppDaemon(t, map[string]any{
		"start":   "gunicorn --bind fd://3 wsgi:app",
		"workers": 1,
		"health":  map[string]any{"http": "/healthz", "min_uptime": "300ms", "timeout": "30s"},
	})
	r := &appRepo{t: t, dir: filepath.Join(t.TempDir(), "py")}
	os.MkdirAll(r.dir, 0o755)
	r.git("init", "-q", "-b", "main")
	r.commit("v1", map[string]string{"wsgi.py": wsgiApp, "message.txt": "one"})
	out, err := r.push(d.url(testToken))
	if err == nil {
		t.Fatalf("push accepted:\n%s", out)
	}
	for _, w := range []string{"hint: gunicorn takes the inherited socket from LISTEN_FDS by itself: drop --bind fd://", "| "} {
		if !strings.Contains(out, w) {
			t.Errorf("the rejection lacks %q:\n%s", w, out)
		}
	}
}
