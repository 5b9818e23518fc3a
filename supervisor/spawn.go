package supervisor

import (
	"fmt"

	"github.com/deployer/deployer/internal/cgroup"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

var errAddrInUse = syscall.EADDRINUSE

// procSpec describes one process to start.
type procSpec struct {
	dir     string
	argv    []string
	env     []string
	sockets []*Socket // placed at fd 3, 4, ...
	out     *os.File  // stdout and stderr
	// dieWithDaemon sets Pdeathsig: the child gets SIGKILL when the thread
	// that forked it ends, so the caller must hold runtime.LockOSThread for
	// as long as the child lives (golang/go#27505). Live workers do not
	// die with the daemon: the next one adopts them.
	dieWithDaemon bool
	// cgroup, if set, is the group the process starts in (CLONE_INTO_CGROUP).
	cgroup *cgroup.Group
	// cred, if set, runs the process as another user.
	cred *syscall.Credential
}

// spawn starts a process in its own process group with exactly stdin
// (/dev/null), stdout, stderr and the sockets, and nothing else.
//
// It uses syscall.ForkExec with raw descriptors because os/exec would call
// (*os.File).Fd on each socket, which switches the shared socket to
// blocking mode under the workers already accepting on it.
func spawn(p procSpec) (int, error) {
	cloexecInherited.Do(markInheritedCloexec)
	null, err := os.Open(os.DevNull)
	if err != nil {
		return 0, fmt.Errorf("spawn: %w", err)
	}
	defer null.Close()
	files := []uintptr{null.Fd(), p.out.Fd(), p.out.Fd()}
	for _, s := range p.sockets {
		fd, err := s.FD()
		if err != nil {
			return 0, fmt.Errorf("spawn: %w", err)
		}
		files = append(files, uintptr(fd))
	}
	sys := &syscall.SysProcAttr{Setpgid: true, Credential: p.cred}
	if p.dieWithDaemon {
		sys.Pdeathsig = syscall.SIGKILL
	}
	if p.cgroup != nil {
		sys.UseCgroupFD, sys.CgroupFD = true, p.cgroup.FD()
	}
	pid, err := syscall.ForkExec(p.argv[0], p.argv, &syscall.ProcAttr{
		Dir:   p.dir,
		Env:   p.env,
		Files: files,
		Sys:   sys,
	})
	if err != nil {
		return 0, fmt.Errorf("spawn %s: %w", p.argv[0], err)
	}
	return pid, nil
}

var cloexecInherited sync.Once

// CloseOnExecInherited marks every descriptor above 2 the process inherited
// close-on-exec, so that nothing it starts (the keeper, a build, git, a
// worker) inherits what the daemon's own parent left open. The daemon calls
// it first thing; workers' spawns call it too, in case.
func CloseOnExecInherited() { cloexecInherited.Do(markInheritedCloexec) }

// markInheritedCloexec sets close-on-exec on every descriptor the daemon
// inherited from its own parent: Go opens all of its own descriptors with it,
// but ForkExec passes on any inherited one that lacks it.
func markInheritedCloexec() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// childEnv is base without the daemon's own socket-activation, notify and
// deployer variables, plus extra, plus LISTEN_FDS/LISTEN_FDNAMES and
// DEPLOYER_LISTEN_0… (each socket's address).
func childEnv(base []string, extra map[string]string, sockets []*Socket) []string {
	var env []string
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LISTEN_") || k == "NOTIFY_SOCKET" || strings.HasPrefix(k, "DEPLOYER_") ||
			strings.HasPrefix(k, "WATCHDOG_") || k == "FDSTORE" {
			continue
		}
		if _, override := extra[k]; override {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	if len(sockets) > 0 {
		env = append(env, "LISTEN_FDS="+strconv.Itoa(len(sockets)), "LISTEN_FDNAMES="+fdNames(sockets))
	}
	// For servers that take an inherited socket only by its address (puma's
	// --bind-to-activated-sockets matches binds to them by address).
	for i, s := range sockets {
		env = append(env, "DEPLOYER_LISTEN_"+strconv.Itoa(i)+"="+s.LocalAddr())
	}
	return env
}

// signalGroup signals the process group led by pid.
func signalGroup(pid int, sig syscall.Signal) {
	_ = syscall.Kill(-pid, sig)
}
