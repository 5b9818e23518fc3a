package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// appSection is a config section for another copy of the example app.
func appSection(name, addr, greeting string) string {
	return fmt.Sprintf(`  %s:
    listen: ["%s"]
    build: "go build -o bin/hello ."
    start: "./bin/hello"
    workers: 1
    env: {GREETING: %s}
    health: {http: /healthz, min_uptime: 300ms, timeout: 30s}
`, name, addr, greeting)
}

func getFrom(addr string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return getWith(c, "http://"+addr+"/")
}

// TestSIGHUPAddsChangesAndRemovesAppsWhileTheOthersServe: a SIGHUP with an
// added app, a changed env and a removed app. The unchanged app serves
// throughout without a failed request and keeps its workers; the changed
// one gets fresh workers with the new env; the removed one stops and frees
// its port; the added one takes pushes. A bad config is then rejected and
// changes nothing.
func TestSIGHUPAddsChangesAndRemovesAppsWhileTheOthersServe(t *testing.T) {
	d := newDaemon(t, "")
	betaAddr, gammaAddr, deltaAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	base, _ := os.ReadFile(d.config)
	d.stop()
	os.WriteFile(d.config, []byte(string(base)+appSection("beta", betaAddr, "hi")+appSection("gamma", gammaAddr, "hi")), 0o644)
	d.start()
	r := newAppRepo(t)
	r.mustPush(d)
	for _, app := range []string{"beta", "gamma"} {
		if out, err := r.push(strings.Replace(d.url(testToken), "/hello.git", "/"+app+".git", 1)); err != nil {
			t.Fatalf("push %s: %v\n%s", app, err, out)
		}
	}
	if body, err := getFrom(gammaAddr); err != nil || !strings.Contains(body, ": hi") {
		t.Fatalf("gamma: %q %v", body, err)
	}
	helloPIDs := d.workerPIDs()
	betaBefore := appStatus(t, d, "beta")

	l := testutil.StartLoad(t, "http://"+d.appAddr+"/", 1)

	os.WriteFile(d.config, []byte(string(base)+appSection("beta", betaAddr, "hey")+appSection("delta", deltaAddr, "hi")), 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 60*time.Second, "the config reload", func() bool { return strings.Contains(d.log.String(), "config reloaded") })

	if body, err := getFrom(betaAddr); err != nil || !strings.Contains(body, ": hey") {
		t.Fatalf("beta after reload: %q %v", body, err)
	}
	if betaAfter := appStatus(t, d, "beta"); slices.Equal(betaAfter, betaBefore) {
		t.Fatal("beta's workers were not replaced")
	}
	if c, err := net.DialTimeout("tcp", gammaAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("the removed app's port still accepts connections")
	}
	if out, err := r.push(strings.Replace(d.url(testToken), "/hello.git", "/delta.git", 1)); err != nil {
		t.Fatalf("push to the added app: %v\n%s", err, out)
	}
	if body, err := getFrom(deltaAddr); err != nil || !strings.HasPrefix(body, "hello from v1") {
		t.Fatalf("delta: %q %v", body, err)
	}

	// A bad config is rejected; nothing changes.
	os.WriteFile(d.config, []byte(string(base)+"  Bad_Name:\n    listen: [\"x\"]\n"), 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 30*time.Second, "the bad config to be rejected", func() bool {
		return strings.Contains(d.log.String(), "config reload rejected")
	})
	if body, err := getFrom(deltaAddr); err != nil || !strings.HasPrefix(body, "hello from v1") {
		t.Fatalf("delta after a rejected reload: %q %v", body, err)
	}

	l.Finish(t, "the config reloads (unchanged app)", 50)
	if got := d.workerPIDs(); !slices.Equal(got, helloPIDs) {
		t.Fatalf("the unchanged app's workers changed: %v -> %v", helloPIDs, got)
	}
}

func appStatus(t *testing.T, d *daemon, app string) []int {
	t.Helper()
	out := d.mustCLI("status", app, "--json")
	var pids []int
	for _, f := range strings.Split(out, "\"pid\": ")[1:] {
		var pid int
		fmt.Sscan(f, &pid)
		pids = append(pids, pid)
	}
	return pids
}

// TestRemovingAnAppMidDeployCancelsItAndFreesItsPort: a SIGHUP that removes
// an app while it builds cancels that deploy (the push is rejected), stops
// its workers and frees its port, so a later config can take the address.
func TestRemovingAnAppMidDeployCancelsItAndFreesItsPort(t *testing.T) {
	gate := t.TempDir()
	d := newDaemon(t, "")
	betaAddr := freeAddr(t)
	base, _ := os.ReadFile(d.config)
	beta := strings.Replace(appSection("beta", betaAddr, "hi"), `build: "go build -o bin/hello ."`,
		`build: "if [ -e message.txt ]; then touch `+gate+`/building; sleep 300; fi; go build -o bin/hello ."`, 1)
	d.stop()
	os.WriteFile(d.config, []byte(string(base)+beta), 0o644)
	d.start()
	r := newAppRepo(t)
	betaURL := strings.Replace(d.url(testToken), "/hello.git", "/beta.git", 1)
	if out, err := r.push(betaURL); err != nil {
		t.Fatalf("push beta: %v\n%s", err, out)
	}
	r.commit("slow", map[string]string{"message.txt": "slow"})
	pushed := make(chan string, 1)
	go func() { out, _ := r.push(betaURL); pushed <- out }()
	waitBuilding(t, gate)

	os.WriteFile(d.config, base, 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	if out := <-pushed; !strings.Contains(out, "[remote rejected]") {
		t.Fatalf("the removed app's deploy went on:\n%s", out)
	}
	testutil.WaitFor(t, 30*time.Second, "the config reload", func() bool { return strings.Contains(d.log.String(), "config reloaded") })
	if c, err := net.DialTimeout("tcp", betaAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("the removed app's port still accepts connections")
	}
	releases := filepath.Join(d.dir, "data/apps/beta/releases")
	testutil.WaitFor(t, 10*time.Second, "the removed app's processes to be gone", func() bool {
		procs, _ := filepath.Glob("/proc/[0-9]*/cwd")
		for _, p := range procs {
			if cwd, _ := os.Readlink(p); strings.HasPrefix(cwd, releases) {
				return false
			}
		}
		return true
	})
	if out, err := d.cli("status", "beta"); err == nil {
		t.Fatalf("status still knows the removed app:\n%s", out)
	}
}
