package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// needCgroups skips a test of cgroup containment where the daemon fell
// back to process groups.
func needCgroups(t *testing.T, d *daemon) {
	t.Helper()
	if strings.Contains(d.log.String(), "process groups only") {
		t.Skip("no writable cgroup v2 here")
	}
}

// pidIn waits for a pid written to file and returns it.
func pidIn(t *testing.T, file string) int {
	t.Helper()
	var pid int
	testutil.WaitFor(t, 30*time.Second, "a pid in "+file, func() bool {
		b, err := os.ReadFile(file)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	return pid
}

// TestABuildsEscapedChildDiesWithTheBuild: a build that starts a child in a
// session of its own, out of the build's process group and directory,
// does not leave it running once the build is done.
func TestABuildsEscapedChildDiesWithTheBuild(t *testing.T) {
	mark := filepath.Join(t.TempDir(), "escaped.pid")
	d := newDaemon(t, "")
	needCgroups(t, d)
	d.stop()
	cfg, _ := os.ReadFile(d.config)
	os.WriteFile(d.config, []byte(strings.Replace(string(cfg), `build: "go build -o bin/hello ."`,
		`build: "(cd /tmp && setsid sh -c 'echo $$ > `+mark+`; exec sleep 300' &) ; go build -o bin/hello ."`, 1)), 0o644)
	d.start()
	r := newAppRepo(t)
	r.mustPush(d)
	pid := pidIn(t, mark)
	testutil.WaitFor(t, 10*time.Second, "the escaped build child to be gone", func() bool { return !alive(pid) })
}

// TestAWorkersBackgroundChildDoesNotOutliveItsWorker: a start script that
// backgrounds a child holding the app's socket (fd 3) before it execs the
// app: after a kill -9 of the daemon the child is adopted with its worker,
// and when the worker is retired the child goes too, so nothing holds the
// port.
func TestAWorkersBackgroundChildDoesNotOutliveItsWorker(t *testing.T) {
	mark := filepath.Join(t.TempDir(), "child.pid")
	d := newDaemon(t, "")
	needCgroups(t, d)
	d.stop()
	cfg, _ := os.ReadFile(d.config)
	os.WriteFile(d.config, []byte(strings.Replace(strings.Replace(string(cfg), `start: "./bin/hello"`,
		`start: "setsid sh -c 'echo $$ > `+mark+`; exec sleep 300' & ./bin/hello"`, 1), "workers: 2", "workers: 1", 1)), 0o644)
	d.start()
	r := newAppRepo(t)
	r.mustPush(d)
	child := pidIn(t, mark)
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	d.start()
	testutil.WaitFor(t, 30*time.Second, "the worker to be adopted", func() bool { return len(d.workerPIDs()) == 1 })
	if !alive(child) {
		t.Fatal("the worker's child died with the daemon: the test proves nothing")
	}
	os.Remove(mark)
	d.mustCLI("reload", "hello")
	testutil.WaitFor(t, 30*time.Second, "the retired worker's child to be gone", func() bool { return !alive(child) })
	d.serves("v1")
}
