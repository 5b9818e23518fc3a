package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// newAdminDaemon starts the hello daemon with http_admin on a free port,
// behind the git tokens file (alice's testToken).
func newAdminDaemon(t *testing.T) (*daemon, string) {
	t.Helper()
	d := writeDaemonConfig(t, "")
	addr := freeAddr(t)
	for addr == d.gitAddr || addr == d.appAddr {
		addr = freeAddr(t)
	}
	cfg, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	admin := fmt.Sprintf("http_admin:\n  listen: %s\n  tokens_file: tokens\napps:", addr)
	if err := os.WriteFile(d.config, []byte(strings.Replace(string(cfg), "apps:", admin, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	d.start()
	t.Cleanup(d.stop)
	return d, addr
}

// adminGet fetches path from the admin listener with token ("" for none).
func adminGet(t *testing.T, addr, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.SetBasicAuth("prometheus", token)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// scrapeMetrics reads /metrics: every sample by its series as exposed,
// such as `deployer_deploys_total{app="hello",result="ok"}`.
func scrapeMetrics(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	code, body := adminGet(t, addr, "/metrics", testToken)
	if code != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d\n%s", code, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("/metrics: not a sample: %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsCountADeployAFailedDeployAndARollbackWithTheirPhases(t *testing.T) {
	d, addr := newAdminDaemon(t)
	if code, _ := adminGet(t, addr, "/metrics", ""); code != http.StatusUnauthorized {
		t.Fatalf("/metrics without a token: HTTP %d", code)
	}
	testutil.WaitFor(t, 30*time.Second, "/healthz to say ok", func() bool {
		code, body := adminGet(t, addr, "/healthz", testToken)
		return code == http.StatusOK && body == "ok\n"
	})
	before := scrapeMetrics(t, addr)
	if v, ok := before[`deployer_deploys_total{app="hello",result="failed"}`]; !ok || v != 0 {
		t.Fatalf("the failed-deploy counter is not there at 0 before any deploy: %v %v", v, ok)
	}

	r := newAppRepo(t)
	rev1 := r.git("rev-parse", "HEAD")
	r.mustPush(d)
	r.commit("second", map[string]string{"message.txt": "second"})
	r.mustPush(d)
	r.commit("broken build", map[string]string{"broken.go": "package main\nthis does not compile\n"})
	if out, err := r.push(d.url(testToken)); err == nil {
		t.Fatalf("a push that does not build was accepted:\n%s", out)
	}
	d.mustCLI("rollback", "hello")
	d.serves("v1")

	var got map[string]float64
	testutil.WaitFor(t, 15*time.Second, "two running workers and none draining", func() bool {
		got = scrapeMetrics(t, addr)
		return got[`deployer_workers{app="hello",state="running"}`] == 2 && got[`deployer_workers{app="hello",state="draining"}`] == 0
	})
	for series, want := range map[string]float64{
		`deployer_deploys_total{app="hello",result="ok"}`:       2,
		`deployer_deploys_total{app="hello",result="failed"}`:   1,
		`deployer_rollbacks_total{app="hello",result="ok"}`:     1,
		`deployer_rollbacks_total{app="hello",result="failed"}`: 0,
		`deployer_reloads_total{app="hello",result="ok"}`:       0,
		`deployer_reloads_total{app="hello",result="failed"}`:   0,

		// Three deploys built, the failed one until it failed; the two
		// that built, and the rollback, went through preflight and green.
		`deployer_phase_duration_seconds_count{app="hello",phase="build"}`:                3,
		`deployer_phase_duration_seconds_bucket{app="hello",phase="build",le="+Inf"}`:     3,
		`deployer_phase_duration_seconds_count{app="hello",phase="checkout"}`:             3,
		`deployer_phase_duration_seconds_count{app="hello",phase="preflight"}`:            3,
		`deployer_phase_duration_seconds_bucket{app="hello",phase="preflight",le="+Inf"}`: 3,
		`deployer_phase_duration_seconds_count{app="hello",phase="green"}`:                3,
		`deployer_phase_duration_seconds_bucket{app="hello",phase="green",le="+Inf"}`:     3,
		`deployer_operation_duration_seconds_count{app="hello",operation="deploy"}`:       2,
		`deployer_operation_duration_seconds_count{app="hello",operation="rollback"}`:     1,

		`deployer_live_release_info{app="hello",release="v1",revision="` + rev1 + `"}`: 1,
		`deployer_workers{app="hello",state="crashloop"}`:                              0,
		`deployer_releases{app="hello",status="live"}`:                                 1,
		`deployer_releases{app="hello",status="rolled-back"}`:                          1,
		`deployer_releases{app="hello",status="failed"}`:                               1,
		`deployer_worker_restarts_total{app="hello"}`:                                  0,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present: %v), want %v", series, v, ok, want)
		}
	}
	// The steps took time, and the phase histogram has its buckets.
	if got[`deployer_phase_duration_seconds_sum{app="hello",phase="green"}`] <= 0 ||
		got[`deployer_phase_duration_seconds_bucket{app="hello",phase="green",le="0.01"}`] != 0 {
		t.Errorf("green durations: sum %v, within 10ms %v (min_uptime is 300ms)",
			got[`deployer_phase_duration_seconds_sum{app="hello",phase="green"}`],
			got[`deployer_phase_duration_seconds_bucket{app="hello",phase="green",le="0.01"}`])
	}
	if b := got[`deployer_releases_bytes{app="hello"}`]; b < 1<<20 {
		t.Errorf("releases bytes %v: less than two built binaries", b)
	}
	for s := range got {
		if strings.HasPrefix(s, "deployer_live_release_info{") && !strings.Contains(s, `release="v1"`) {
			t.Errorf("another release is named live: %s", s)
		}
	}
	if t.Failed() {
		_, body := adminGet(t, addr, "/metrics", testToken)
		t.Logf("/metrics:\n%s", body)
	}
}

// listenInode is the inode of the socket listening on addr (/proc/net/tcp):
// the same socket, not one bound again, has the same inode.
func listenInode(t *testing.T, addr string) string {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	if host != "127.0.0.1" {
		t.Fatalf("listenInode reads IPv4 loopback only, not %s", addr)
	}
	p, _ := strconv.Atoi(port)
	local := fmt.Sprintf("0100007F:%04X", p)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == local && f[3] == "0A" { // 0A: LISTEN
			return f[9]
		}
	}
	t.Fatalf("nothing listens on %s", addr)
	return ""
}

func TestMetricsListenerIsHandedOverOnAnUpgradeNotBoundAgain(t *testing.T) {
	d, addr := newAdminDaemon(t)
	testutil.WaitFor(t, 30*time.Second, "/healthz to say ok", func() bool {
		code, _ := adminGet(t, addr, "/healthz", testToken)
		return code == http.StatusOK
	})
	inode := listenInode(t, addr)
	_, oldPID := d.daemonVersion()
	d.mustCLI("upgrade")
	if _, pid := d.daemonVersion(); pid == oldPID {
		t.Fatalf("the daemon is still pid %d after the upgrade", pid)
	}
	if got := listenInode(t, addr); got != inode {
		t.Fatalf("the admin socket is inode %s after the upgrade, was %s: it was bound again", got, inode)
	}
	if code, body := adminGet(t, addr, "/healthz", testToken); code != http.StatusOK {
		t.Fatalf("/healthz after the upgrade: HTTP %d %q", code, body)
	}
	if got := scrapeMetrics(t, addr); got[`deployer_workers{app="hello",state="running"}`] != 0 {
		t.Fatalf("workers of an app never deployed: %v", got[`deployer_workers{app="hello",state="running"}`])
	}
}

// TestMetricsPublicAppliesOnSIGHUPAndTheListenerStays: a
// config reload opens /metrics to everyone at once, keeps the rest behind
// a token, and leaves the listener as it is when its address changes.
func TestMetricsPublicAppliesOnSIGHUPAndTheListenerStays(t *testing.T) {
	d, addr := newAdminDaemon(t)
	if code, _ := adminGet(t, addr, "/metrics", ""); code != http.StatusUnauthorized {
		t.Fatalf("/metrics without a token: HTTP %d", code)
	}
	inode := listenInode(t, addr)
	cfg, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	moved := freeAddr(t)
	next := strings.Replace(string(cfg), "  listen: "+addr+"\n  tokens_file: tokens\n",
		"  listen: "+moved+"\n  tokens_file: tokens\n  metrics_public: true\n", 1)
	if next == string(cfg) {
		t.Fatal("could not change http_admin in the config")
	}
	if err := os.WriteFile(d.config, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 30*time.Second, "the config reload", func() bool { return strings.Contains(d.log.String(), "config reloaded") })
	if code, body := adminGet(t, addr, "/metrics", ""); code != http.StatusOK || !strings.Contains(body, "deployer_build_info{") {
		t.Fatalf("/metrics without a token after metrics_public: true: HTTP %d", code)
	}
	if code, _ := adminGet(t, addr, "/", ""); code != http.StatusUnauthorized {
		t.Fatalf("/ without a token after metrics_public: true: HTTP %d", code)
	}
	if got := listenInode(t, addr); got != inode {
		t.Fatalf("the admin listener was bound again on SIGHUP: inode %s, was %s", got, inode)
	}
	if !strings.Contains(d.log.String(), "http_admin.listen changed") {
		t.Fatalf("the daemon did not say the new listen address waits for a restart:\n%s", d.log)
	}
}
