package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// escapeRepo is a working copy of testdata/escape: a worker that tries to
// reach the daemon's secrets and another app's.
func escapeRepo(t *testing.T) *appRepo {
	t.Helper()
	r := &appRepo{t: t, dir: filepath.Join(t.TempDir(), "escape")}
	if err := os.CopyFS(r.dir, os.DirFS("testdata/escape")); err != nil {
		t.Fatal(err)
	}
	r.git("init", "-q", "-b", "main")
	r.commit("first", nil)
	return r
}

// accountsConfig is two apps, each run as a user of its own: hello as
// nobody, other (with a secret in its env) as daemon.
func accountsConfig(d *daemon, otherAddr, sshAddr string) string {
	data := filepath.Join(d.dir, "data")
	app := func(name, user, addr, env string) string {
		return fmt.Sprintf(`  %s:
    user: %s
    listen: ["%s"]
    build: "python3 app.py probe > build-probe.json"
    start: "exec python3 app.py"
    workers: 1
    shared: ["storage/"]
    env: {DATA: %s, TOKENS: %s%s}
    drain_timeout: 5s
    health: {http: /healthz, notify: true, min_uptime: 200ms, timeout: 30s}
`, name, user, addr, data, filepath.Join(d.dir, "tokens"), env)
	}
	return fmt.Sprintf("data_dir: data\ngit:\n  http_listen: %s\n  tokens_file: tokens\n  ssh_listen: %s\n  authorized_keys: authorized_keys\n  lock_timeout: 1m\napps:\n%s%s",
		d.gitAddr, sshAddr, app("hello", "nobody", d.appAddr, ""), app("other", "daemon", otherAddr, ", SECRET_KEY: s3cret-of-other"))
}

// TestAppCodeCannotReachTheDaemonsOrAnotherAppsSecrets is issue 9's
// escape-to-secrets repro: code pushed to one app tries to read the
// tokens file, the SSH host key, the control and keeper sockets, and
// another app's metadata (its env), code, repository, ledger, shared files
// and process environment. Every attempt is refused, from the build and
// from the worker, while the app's own tree and shared paths work.
func TestAppCodeCannotReachTheDaemonsOrAnotherAppsSecrets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the daemon switches to the apps' users")
	}
	d := writeDaemonConfig(t, "")
	otherAddr := freeAddr(t)
	if err := os.WriteFile(filepath.Join(d.dir, "authorized_keys"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.config, []byte(accountsConfig(d, otherAddr, freeAddr(t))), 0o644); err != nil {
		t.Fatal(err)
	}

	// t.TempDir is 0700: the apps' users cannot reach their trees, and the
	// daemon says so at start, naming the directory in the way.
	out, err := exec.Command(daemonBin, "serve", "-c", d.config).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "apps.hello.user: nobody cannot reach") ||
		!strings.Contains(string(out), filepath.Dir(d.dir)+" is mode 0700") {
		t.Fatalf("start with an unreachable data_dir: %v\n%s", err, out)
	}
	for _, p := range []string{d.dir, filepath.Dir(d.dir)} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	d.start()
	t.Cleanup(d.stop)

	r := escapeRepo(t)
	other := strings.Replace(d.url(testToken), "/hello.git", "/other.git", 1)
	if out, err := r.push(other); err != nil {
		t.Fatalf("push to other: %v\n%s\n%s", err, out, d.log)
	}
	r.mustPush(d)

	want := map[string]string{
		"tokens": "PermissionError", "host_key": "PermissionError", "control": "PermissionError",
		"keeper": "PermissionError", "list_data": "PermissionError", "list_apps": "PermissionError",
		"other_meta": "PermissionError", "other_code": "PermissionError", "other_list": "PermissionError",
		"other_repo": "PermissionError", "other_ledger": "PermissionError", "other_shared": "PermissionError",
		"own_meta": "PermissionError", "own_repo": "PermissionError", "write_releases": "PermissionError",
		"write_data": "PermissionError", "own_code": "ok", "own_tree_write": "ok", "shared_write": "ok",
		"secret_environ": "",
	}
	check := func(where string, b []byte) {
		t.Helper()
		got := map[string]any{}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v: %s", where, err, b)
		}
		if got["uid"] != float64(65534) || got["home"] != "/nonexistent" {
			t.Errorf("%s ran as uid %v, HOME %v", where, got["uid"], got["home"])
		}
		for _, g := range got["groups"].([]any) {
			if g == float64(0) {
				t.Errorf("%s kept root's group: %v", where, got["groups"])
			}
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %v, want %v", where, k, got[k], v)
			}
		}
	}
	// The build, as the app's user.
	b, err := os.ReadFile(filepath.Join(d.dir, "data/apps/hello/releases/v1/build-probe.json"))
	if err != nil {
		t.Fatal(err)
	}
	check("the build", b)
	// The worker, as the app's user.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + d.appAddr + "/probe")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("worker probe: %s", b)
	check("the worker", b)

	// The trees belong to their apps' users; the daemon's files stay its own.
	owner := func(p string) uint32 {
		fi, err := os.Lstat(filepath.Join(d.dir, "data", p))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Uid
	}
	for p, uid := range map[string]uint32{
		"apps/hello/releases/v1": 65534, "apps/hello/releases/v1/app.py": 65534, "apps/hello/shared": 65534,
		"apps/other/releases/v1": 1, "apps/hello/releases/v1.json": 0, "apps/hello/repo.git": 0, "deployer.sock": 0,
	} {
		if got := owner(p); got != uid {
			t.Errorf("%s owned by uid %d, want %d", p, got, uid)
		}
	}
	if !strings.Contains(d.log.String(), "run as nobody (uid 65534") {
		t.Errorf("the log does not say who the app runs as:\n%s", d.log)
	}
	if strings.Contains(d.log.String(), "run as root") {
		t.Errorf("a warning about root for apps that name a user:\n%s", d.log)
	}

	// kill -9 of the daemon: the next one adopts the workers of another
	// user (it reads their environ and takes a pidfd as root), and a
	// rollback-free redeploy still hands the new tree over.
	pids := d.workerPIDs()
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	d.start()
	testutil.WaitFor(t, 30*time.Second, "the workers to be adopted", func() bool {
		got := d.workerPIDs()
		return len(got) == 1 && got[0] == pids[0]
	})
	r.commit("second", map[string]string{"v2": "x"})
	r.mustPush(d)
	if got := owner("apps/hello/releases/v2/v2"); got != 65534 {
		t.Errorf("v2's tree owned by uid %d", got)
	}
	if out := d.mustCLI("rollback", "hello"); !strings.Contains(out, "v1") {
		t.Errorf("rollback: %s", out)
	}
	if body, err := d.get(); body != "hello from v1\n" || err != nil {
		t.Errorf("after the rollback: %q %v", body, err)
	}
}

// TestAnAppWithoutAUserUnderRootIsWarnedAbout: the default (no user) still
// works as root, and the log says at start that the app's code runs as root.
func TestAnAppWithoutAUserUnderRootIsWarnedAbout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the warning is for a daemon that runs as root")
	}
	d := newDaemon(t, "")
	if !strings.Contains(d.log.String(), "run as root: set apps.hello.user") {
		t.Fatalf("no warning:\n%s", d.log)
	}
}

// TestLimitsAreAppliedOrTheLogSaysWhyNot: an app with limits deploys
// either way. Where the controllers are delegated (a pure cgroup v2 host
// under systemd) each worker's cgroup carries them; where they are not
// (the hybrid hosts of CI, whose memory controller is cgroup v1's), the
// log says at start which limit is not enforced and why.
func TestLimitsAreAppliedOrTheLogSaysWhyNot(t *testing.T) {
	d := newDaemon(t, "    limits: {memory: 1GiB, pids: 500, cpu: \"1.5\"}\n")
	needCgroups(t, d)
	r := newAppRepo(t)
	r.mustPush(d)
	d.serves("v1")
	log := d.log.String()
	if !strings.Contains(log, "limits enforced") {
		if !strings.Contains(log, "limits not enforced") || !strings.Contains(log, "apps=hello") {
			t.Fatalf("the log says nothing of the limits:\n%s", log)
		}
		t.Logf("not enforced here: %s", log[strings.Index(log, "limits not enforced"):][:200])
		return
	}
	pid := d.workerPIDs()[0]
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var group string
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			group = p
		}
	}
	for file, want := range map[string]string{"memory.max": "1073741824", "pids.max": "500", "cpu.max": "150000 100000"} {
		var got []byte
		for _, mount := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
			if got, err = os.ReadFile(filepath.Join(mount, group, file)); err == nil {
				break
			}
		}
		if strings.TrimSpace(string(got)) != want {
			t.Errorf("%s of worker %d's cgroup %s = %q, want %q (%v)", file, pid, group, got, want, err)
		}
	}
}
