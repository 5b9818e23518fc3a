package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestAHostileBuildCannotWedgeOrRedirectTheDaemon: an app's build, as the
// app's user, leaves a 400-deep tree it made unreadable, a FIFO in its
// tree and in shared/, links out to /etc in its tree and in shared/, a
// process that left its process group, makes its tree writable by all and
// floods the notify socket. Deploys go on, cleanup removes such a tree,
// nothing outside the app's files changes hands, and nothing is left
// running.
func TestAHostileBuildCannotWedgeOrRedirectTheDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the daemon switches to the app's user")
	}
	d := writeDaemonConfig(t, "")
	data := filepath.Join(d.dir, "data")
	cfg := fmt.Sprintf(`data_dir: data
git:
  http_listen: %s
  tokens_file: tokens
  lock_timeout: 1m
apps:
  hello:
    user: nobody
    listen: ["%s"]
    build: "sh build.sh"
    start: "exec python3 app.py"
    workers: 1
    shared: ["storage/", "fifo"]
    keep_releases: 1
    env: {DATA: %s, SHARED: %s}
    drain_timeout: 2s
    health: {notify: true, min_uptime: 200ms, timeout: 30s}
`, d.gitAddr, d.appAddr, data, filepath.Join(data, "apps/hello/shared"))
	if err := os.WriteFile(d.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{d.dir, filepath.Dir(d.dir)} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	d.start()
	t.Cleanup(d.stop)

	r := &appRepo{t: t, dir: filepath.Join(t.TempDir(), "hostile")}
	if err := os.CopyFS(r.dir, os.DirFS("testdata/hostile")); err != nil {
		t.Fatal(err)
	}
	r.git("init", "-q", "-b", "main")
	for i := 1; i <= 3; i++ {
		r.commit(fmt.Sprint("push ", i), map[string]string{"n": fmt.Sprint(i)})
		r.mustPush(d)
	}
	if out := d.mustCLI("cleanup", "hello"); !strings.Contains(out, "v1") {
		t.Fatalf("cleanup: %s", out)
	}
	if _, err := os.Lstat(filepath.Join(data, "apps/hello/releases/v1")); !os.IsNotExist(err) {
		t.Fatalf("v1's tree is still there after cleanup: %v\n%s", err, d.log)
	}
	for _, p := range []string{"/etc", "/etc/passwd", "/etc/shadow"} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 {
			t.Errorf("%s now owned by uid %d", p, st.Uid)
		}
	}
	if out, _ := exec.Command("pgrep", "-f", "sleep 4242").Output(); len(out) > 0 {
		t.Errorf("a process the build left is still running: %s", out)
	}
	if _, err := d.client().Status(t.Context()); err != nil {
		t.Fatalf("the daemon does not answer: %v\n%s", err, d.log)
	}
	if st := d.release("v3")["status"]; st != "live" {
		t.Fatalf("v3 is %v, want live\n%s", st, d.log)
	}
}
