package main

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// bannerApp speaks first: it writes a line as soon as it accepts.
const bannerApp = `import os, socket, threading
s = socket.socket(fileno=3)
s.setblocking(True)
def h(c):
    try:
        c.sendall(("220 %s\r\n" % os.environ["DEPLOYER_RELEASE"]).encode())
        c.recv(100)
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=h, args=(c,), daemon=True).start()
`

// bannerDelay is how long a fresh connection waits for the banner.
func bannerDelay(t *testing.T, addr string) time.Duration {
	t.Helper()
	t0 := time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "220 ") {
		t.Fatalf("banner: %q %v", line, err)
	}
	return time.Since(t0)
}

func bannerDaemon(t *testing.T, deferAccept string) (*daemon, *appRepo) {
	t.Helper()
	requireCommands(t, "python3")
	d := startAppDaemon(t, map[string]any{
		"start": "exec python3 app.py", "workers": 1, "drain_timeout": "2s",
		"defer_accept": deferAccept,
		"health":       map[string]any{"tcp": true, "min_uptime": "300ms", "timeout": "10s"},
	})
	r := &appRepo{t: t, dir: filepath.Join(t.TempDir(), "banner")}
	if err := os.Mkdir(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r.git("init", "-q", "-b", "main")
	r.commit("v1", map[string]string{"app.py": bannerApp})
	r.mustPush(d)
	return d, r
}

func setDeferAccept(t *testing.T, d *daemon, from, to string) {
	t.Helper()
	b, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "defer_accept: "+from, "defer_accept: "+to, 1)
	if s == string(b) {
		t.Fatalf("no defer_accept: %s in\n%s", from, b)
	}
	if err := os.WriteFile(d.config, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDeferAcceptOffTakesEffectOnConfigReload: an app whose server speaks
// first waits defer_accept for every connection; a config reload that
// turns it off turns it off on the live socket.
func TestDeferAcceptOffTakesEffectOnConfigReload(t *testing.T) {
	d, _ := bannerDaemon(t, "3s")
	if got := bannerDelay(t, d.appAddr); got < 2*time.Second {
		t.Fatalf("defer_accept 3s: banner after %s, want ~3s", got)
	}
	setDeferAccept(t, d, "3s", "0s")
	pids := d.workerPIDs()
	d.cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 30*time.Second, "the reload's fresh workers", func() bool {
		p := d.workerPIDs()
		return len(p) == 1 && p[0] != pids[0] && d.status().Workers[0].State == "running"
	})
	if got := bannerDelay(t, d.appAddr); got > time.Second {
		t.Fatalf("defer_accept 0s after SIGHUP: banner still after %s", got)
	}
}

// TestDeferAcceptOfARestartedDaemonAppliesToTheSocketItTakesBack: a
// daemon killed and started again with defer_accept: 0s adopts the running
// workers (no new pool sets socket options), and still the socket they
// share takes the new value: a server-speaks-first app whose operator fixed
// the config and restarted the daemon.
func TestDeferAcceptOfARestartedDaemonAppliesToTheSocketItTakesBack(t *testing.T) {
	d, _ := bannerDaemon(t, "3s")
	if got := bannerDelay(t, d.appAddr); got < 2*time.Second {
		t.Fatalf("defer_accept 3s: banner after %s, want ~3s", got)
	}
	pids := d.workerPIDs()
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	setDeferAccept(t, d, "3s", "0s")
	d.start()
	testutil.WaitFor(t, 30*time.Second, "the workers to be adopted", func() bool { return len(d.workerPIDs()) == 1 })
	d.sameWorkers(pids)
	if got := bannerDelay(t, d.appAddr); got > time.Second {
		t.Errorf("the daemon restarted with defer_accept: 0s, yet a connection waits %s for the banner (the socket keeps 3s)", got)
	}
}
