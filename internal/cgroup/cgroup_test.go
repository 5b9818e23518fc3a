package cgroup

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func tree(t *testing.T) *Tree {
	t.Helper()
	tr, err := Open(t.TempDir())
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("no writable cgroup v2 here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(tr.Dir()) })
	return tr
}

// TestKillReachesWhatLeftTheProcessGroup: a child that double-forks into a
// session of its own is out of reach of a process-group kill, not of its
// cgroup's.
func TestKillReachesWhatLeftTheProcessGroup(t *testing.T) {
	tr := tree(t)
	g, err := tr.New("app/build-v1-1")
	if err != nil {
		t.Fatal(err)
	}
	pidFile := t.TempDir() + "/escaped"
	cmd := exec.Command("/bin/sh", "-c", "setsid sh -c 'echo $$ > "+pidFile+"; exec sleep 60' & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, UseCgroupFD: true, CgroupFD: g.FD()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var escaped int
	deadline := time.Now().Add(10 * time.Second)
	for escaped == 0 {
		if b, err := os.ReadFile(pidFile); err == nil && len(b) > 1 {
			escaped, _ = strconv.Atoi(string(b[:len(b)-1]))
		} else if time.Now().After(deadline) {
			t.Fatal("the escaping child did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // what a process-group kill reaches
	cmd.Wait()
	if syscall.Kill(escaped, 0) != nil {
		t.Fatal("the test is wrong: the escaped child died with the process group")
	}
	if !g.Populated() {
		t.Fatal("the group says it is empty")
	}
	if got := tr.List("app"); len(got) != 1 || got[0] != "app/build-v1-1" {
		t.Fatalf("List: %v", got)
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for alive(escaped) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d outlived its cgroup's kill", escaped)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(tr.Dir() + "/app"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty groups left behind: %v", err)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && b[i+2] != 'Z'
		}
	}
	return false
}
