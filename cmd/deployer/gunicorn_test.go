package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer/deployer/internal/testutil"
)

const wsgiApp = `import os

def app(environ, start_response):
    if environ["PATH_INFO"] == "/healthz":
        body = b"ok\n"
    else:
        body = ("gunicorn %s %s\n" % (os.environ["DEPLOYER_RELEASE"], open("message.txt").read().strip())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
`

// TestGunicornAppDeploysUnmodified: a Python app under gunicorn, which takes
// the socket by systemd activation and says READY=1 by sd_notify, deploys
// with health.notify and swaps under load with no failed request.
func TestGunicornAppDeploysUnmodified(t *testing.T) {
	if _, err := exec.LookPath("gunicorn"); err != nil {
		t.Skip("gunicorn is not installed (apt-get install gunicorn; .ci/run does)")
	}
	d := newDaemon(t, "    health: {http: /healthz, notify: true, min_uptime: 300ms, timeout: 60s}\n")
	cfg, _ := os.ReadFile(d.config)
	d.stop()
	cfg = []byte(strings.Replace(string(cfg), `build: "go build -o bin/hello ."`, `build: ""`, 1))
	cfg = []byte(strings.Replace(string(cfg), `start: "./bin/hello"`, `start: "gunicorn --workers 2 --graceful-timeout 5 wsgi:app"`, 1))
	os.WriteFile(d.config, cfg, 0o644)
	d.start()

	r := &appRepo{t: t, dir: filepath.Join(t.TempDir(), "py")}
	os.MkdirAll(r.dir, 0o755)
	r.git("init", "-q", "-b", "main")
	r.commit("v1", map[string]string{"wsgi.py": wsgiApp, "message.txt": "one"})
	r.mustPush(d)
	if body, err := d.get(); err != nil || body != "gunicorn v1 one\n" {
		t.Fatalf("v1: %q %v", body, err)
	}

	l := testutil.StartLoad(t, "http://"+d.appAddr+"/", 1)
	r.commit("v2", map[string]string{"message.txt": "two"})
	r.mustPush(d)
	l.Finish(t, "the gunicorn swap", 20)
	if body, err := d.get(); err != nil || body != "gunicorn v2 two\n" {
		t.Fatalf("v2: %q %v", body, err)
	}
}
