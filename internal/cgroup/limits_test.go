package cgroup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A group's Path is what /proc/PID/cgroup says of a process in it.
func TestPathIsWhatProcSays(t *testing.T) {
	tr := tree(t)
	g, err := tr.New("app/w0-1")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: g.FD()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if got := Of(cmd.Process.Pid); got != g.Path() || got == "" {
		t.Fatalf("/proc says %q, the group says %q", got, g.Path())
	}
	if Of(os.Getpid()) == g.Path() {
		t.Fatal("the test process is said to be in the worker's group")
	}
}

// Where no controller is delegated, a limit is refused with ErrNotEnforced
// and naming why, and making groups still works.
func TestLimitWithoutControllerIsNotEnforced(t *testing.T) {
	tr := tree(t)
	missing := slices.DeleteFunc([]string{"memory", "pids", "cpu"}, func(c string) bool {
		return slices.Contains(controllers(filepath.Join(tr.Dir(), "cgroup.controllers")), c)
	})
	if len(missing) == 0 {
		t.Skip("every controller is delegated here")
	}
	err := tr.Enable(missing, []int{os.Getpid()})
	if !errors.Is(err, ErrNotEnforced) || !strings.Contains(err.Error(), missing[0]) {
		t.Fatalf("Enable(%v): %v", missing, err)
	}
	g, err := tr.New("app/w0-1")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	l := Limits{Memory: 64 << 20, Pids: 10, CPU: 0.5}
	for _, c := range missing {
		switch c {
		case "memory":
			l = Limits{Memory: 64 << 20}
		case "pids":
			l = Limits{Pids: 10}
		case "cpu":
			l = Limits{CPU: 0.5}
		}
		if err := g.Limit(l); !errors.Is(err, ErrNotEnforced) {
			t.Fatalf("Limit %+v: %v", l, err)
		}
	}
}

// Enable on a delegated subtree: the daemon's own group holds only the
// daemon, which moves into DaemonLeaf so that the controller can be turned
// on for the tree, and every group made afterwards has it. Played here with
// hugetlb, the one controller this kind of hybrid host leaves to cgroup v2,
// in a group standing for the daemon's own, a sleep standing for the daemon.
func TestEnableMovesTheDaemonAndTurnsControllersOn(t *testing.T) {
	mount, err := mountPoint()
	if err != nil {
		t.Skip(err)
	}
	const ctl = "hugetlb"
	if !slices.Contains(controllers(filepath.Join(mount, "cgroup.controllers")), ctl) {
		t.Skipf("no %s controller on cgroup v2 here", ctl)
	}
	rootSub := filepath.Join(mount, "cgroup.subtree_control")
	if !slices.Contains(controllers(rootSub), ctl) {
		if err := os.WriteFile(rootSub, []byte("+"+ctl), 0); err != nil {
			t.Skipf("cannot turn %s on at the root: %v", ctl, err)
		}
		defer os.WriteFile(rootSub, []byte("-"+ctl), 0)
	}
	base := fmt.Sprintf("/deployer-test-%d", os.Getpid())
	baseDir := filepath.Join(mount, base)
	if err := os.Mkdir(baseDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bfd, err := unix.Open(baseDir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	daemon := exec.Command("sleep", "60")
	daemon.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: bfd}
	err = daemon.Start()
	unix.Close(bfd)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := openIn(mount, base, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		daemon.Process.Kill()
		daemon.Wait()
		var dirs []string
		filepath.WalkDir(baseDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil {
				t.Errorf("rmdir %s: %v", dirs[i], err)
			}
		}
	}()

	// A process that is not the daemon's in its group: nothing moves.
	err = tr.Enable([]string{ctl}, []int{os.Getpid()})
	if !errors.Is(err, ErrNotEnforced) || !strings.Contains(err.Error(), "not the daemon's") {
		t.Fatalf("with a stranger in the group: %v", err)
	}
	if Of(daemon.Process.Pid) != base {
		t.Fatalf("moved a process that is not ours to %s", Of(daemon.Process.Pid))
	}
	if err := tr.Enable([]string{ctl}, []int{daemon.Process.Pid}); err != nil {
		t.Fatal(err)
	}
	if got := Of(daemon.Process.Pid); got != base+"/"+DaemonLeaf {
		t.Fatalf("the daemon is in %s", got)
	}
	g, err := tr.New("app/w0-1")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	if m, _ := filepath.Glob(filepath.Join(baseDir, filepath.Base(tr.Dir()), "app/w0-1", ctl+".*")); len(m) == 0 {
		t.Fatalf("no %s files in a group made after Enable", ctl)
	}
	if !slices.Equal(tr.Enabled(), []string{ctl}) {
		t.Fatalf("Enabled: %v", tr.Enabled())
	}
	// One not delegated: named, with what is.
	err = tr.Enable([]string{"memory"}, []int{daemon.Process.Pid})
	if !errors.Is(err, ErrNotEnforced) || !strings.Contains(err.Error(), "not delegated") {
		t.Fatalf("memory: %v", err)
	}
}
