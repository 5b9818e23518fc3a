package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// systemdSide plays systemd for the daemon: it holds the listening sockets
// and passes them by socket activation (LISTEN_FDS, LISTEN_FDNAMES,
// LISTEN_PID), and it listens on NOTIFY_SOCKET.
type systemdSide struct {
	files  []*os.File
	names  []string
	notify *net.UnixConn
	path   string
	msgs   chan string
}

func newSystemdSide(t *testing.T, d *daemon) *systemdSide {
	t.Helper()
	s := &systemdSide{path: filepath.Join(t.TempDir(), "notify"), msgs: make(chan string, 64)}
	add := func(name string, ln net.Listener) {
		f, err := ln.(interface{ File() (*os.File, error) }).File()
		if err != nil {
			t.Fatal(err)
		}
		ln.Close() // the file is systemd's copy
		s.files = append(s.files, f)
		s.names = append(s.names, name)
		t.Cleanup(func() { f.Close() })
	}
	for name, addr := range map[string]string{"git-http": d.gitAddr, "hello.0": d.appAddr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		add(name, ln)
	}
	if err := os.MkdirAll(filepath.Join(d.dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	ctl, err := net.ListenUnix("unix", &net.UnixAddr{Name: d.socket(), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ctl.SetUnlinkOnClose(false)
	os.Chmod(d.socket(), 0o600)
	add("control", ctl)
	s.notify, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.notify.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := s.notify.Read(buf)
			if err != nil {
				return
			}
			s.msgs <- string(buf[:n])
		}
	}()
	return s
}

// command starts the daemon as systemd would: LISTEN_PID is the daemon's
// own pid, which sh's $$ is once it execs.
func (s *systemdSide) command(d *daemon) func() *exec.Cmd {
	return func() *exec.Cmd {
		cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" serve -c "$1"`, daemonBin, d.config)
		cmd.ExtraFiles = s.files
		cmd.Env = append(os.Environ(), "LISTEN_FDS="+strconv.Itoa(len(s.files)), "LISTEN_FDNAMES="+strings.Join(s.names, ":"),
			"NOTIFY_SOCKET="+s.path)
		return cmd
	}
}

// acceptQueue is the number of connections waiting on the listening
// socket of addr's port (rx_queue in /proc/net/tcp).
func acceptQueue(t *testing.T, addr string) int {
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[3] != "0A" {
			continue
		}
		_, hexPort, _ := strings.Cut(f[1], ":")
		if lp, _ := strconv.ParseInt(hexPort, 16, 32); int(lp) == p {
			_, rx, _ := strings.Cut(f[4], ":")
			n, _ := strconv.ParseInt(rx, 16, 64)
			return int(n)
		}
	}
	return 0
}

// waitReady waits for READY=1 and returns every message up to it.
func (s *systemdSide) waitReady(t *testing.T) string {
	t.Helper()
	var got []string
	deadline := time.After(60 * time.Second)
	for {
		select {
		case m := <-s.msgs:
			got = append(got, m)
			if strings.Contains(m, "READY=1") {
				return strings.Join(got, "\n")
			}
		case <-deadline:
			t.Fatalf("no READY=1 from the daemon; got %q", got)
		}
	}
}

func TestSocketActivatedDaemonServesAndConnectionsWaitThroughARestart(t *testing.T) {
	d := writeDaemonConfig(t, "")
	sd := newSystemdSide(t, d)
	d.command = sd.command(d)
	d.start()
	t.Cleanup(d.stop)
	if msgs := sd.waitReady(t); !strings.Contains(msgs, "STATUS=hello nothing live") {
		t.Fatalf("notify messages: %q", msgs)
	}
	r := newAppRepo(t)
	r.mustPush(d) // over the git socket systemd passed
	d.serves("v1")

	// A restart: the daemon stops (its workers drain), and while nothing
	// runs, new connections wait in the queue of the socket systemd holds.
	d.stop()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 60 * time.Second}
			resp, err := c.Get("http://" + d.appAddr + "/")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = &statusError{resp.StatusCode}
				}
			}
			errs <- err
		}()
	}
	testutil.WaitFor(t, 30*time.Second, "the connections to queue while no daemon runs", func() bool {
		return acceptQueue(t, d.appAddr) >= 8
	})
	d.start()
	sd.waitReady(t)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a connection made during the restart failed: %v", err)
		}
	}
	d.serves("v1")
}
