package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/deployer/deployer/internal/cgroup"
	"golang.org/x/sys/unix"
)

// process is one running worker process: spawned by this daemon, or adopted
// from a previous one. Either way it leads its own process group.
type process struct {
	pid     int
	started uint64 // start time in clock ticks since boot: with pid, its identity
	exit    <-chan string
	out     *os.File        // our read end of its output pipe; nil if it has none
	copied  <-chan struct{} // closed when the copier has stopped reading out
	outName string          // the keeper's entry for the other copy of out
	cgroup  *cgroup.Group   // its own cgroup; nil where cgroups are not used
	kill    func()          // SIGKILL to the process itself, even if it left its group
	release func()          // stop watching it (detach); nil if there is nothing to let go
}

// WorkerRecord is what a later daemon needs to adopt a running worker.
type WorkerRecord struct {
	Index    int    `json:"index"`
	PID      int    `json:"pid"`
	Started  uint64 `json:"start_ticks"` // /proc/PID/stat starttime: tells a recycled pid apart
	Restarts int    `json:"restarts"`
	Since    string `json:"since"`            // RFC 3339, when the process started
	Cgroup   string `json:"cgroup,omitempty"` // its group in the daemon's cgroup tree
	// Draining is when the process was sent its stop signal (RFC 3339), if
	// it was: the daemon that adopts it must not signal it again (a second
	// stop signal cuts a worker's drain short, resetting its requests in
	// flight), only wait out the rest of drain_timeout.
	Draining string `json:"draining,omitempty"`
}

// startTicks reads a process's start time (clock ticks since boot) from
// /proc/PID/stat, field 22.
func startTicks(pid int) (uint64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22 is the 20th after the name
}

// sameLiveProcess reports whether pid still names the process that
// started at ticks and has not exited: not a zombie, and not another
// process that got the pid after it was reaped.
func sameLiveProcess(pid int, ticks uint64) bool {
	f, err := statFields(pid)
	return err == nil && f[0] != "Z" && f[19] == strconv.FormatUint(ticks, 10)
}

// statFields are the fields of /proc/PID/stat after the command name
// (field 3 onwards), at least 20 of them.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	// The command name (field 2) may hold spaces and parentheses: the fields
	// that follow start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return f, nil
}

// adoptProcess takes over a worker a previous daemon started, if pid still
// names that very process: same start time, so a recycled pid is never
// adopted. Its exit is watched through a pidfd, which works for a process
// that is not our child.
func adoptProcess(rec WorkerRecord, app, release string, tree *cgroup.Tree) (*process, error) {
	pidfd, err := unix.PidfdOpen(rec.PID, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("adopt pid %d: %w", rec.PID, err)
	}
	// Checked after the pidfd is open: from here on the pid cannot be
	// recycled behind our back without the pidfd reporting the exit.
	ticks, err := startTicks(rec.PID)
	if err != nil || ticks != rec.Started || !isWorkerOf(rec.PID, app, release) {
		unix.Close(pidfd)
		return nil, fmt.Errorf("adopt pid %d: %w", rec.PID, ErrNotAdoptable)
	}
	// A non-blocking pidfd in the runtime's poller: readable once the
	// process exits, and closing it (detach) ends the wait.
	f := os.NewFile(uintptr(pidfd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("adopt pid %d: %w", rec.PID, err)
	}
	exit := make(chan string, 1)
	go func() {
		err := rc.Read(func(fd uintptr) bool {
			n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
			return n > 0
		})
		if err != nil {
			return // released: another daemon watches it now
		}
		exit <- reap(rec.PID)
	}()
	var g *cgroup.Group
	if tree != nil && rec.Cgroup != "" {
		g, _ = tree.Get(rec.Cgroup) // gone: the process group still reaches it
	}
	return &process{
		pid: rec.PID, started: rec.Started, exit: exit, cgroup: g,
		kill: func() {
			_ = rc.Control(func(fd uintptr) { _ = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0) })
		},
		release: func() { f.Close() },
	}, nil
}

// reap collects an exited adopted process if it happens to be our child
// (the daemon took its own workers back after a failed upgrade), and says
// how it ended when that is known.
func reap(pid int) string {
	var ws syscall.WaitStatus
	got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	if err != nil || got != pid {
		return "exited; status unknown: started by a previous daemon"
	}
	switch {
	case ws.Exited():
		return "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return "signal: " + ws.Signal().String()
	}
	return "exited"
}

// isWorkerOf reports whether process pid was started as a worker of app's
// release: its environment (as exec'd, /proc/PID/environ) says so. A
// forged workers.json naming another process of the daemon's user (the
// keeper, a shell) is refused, and nothing is signalled.
func isWorkerOf(pid int, app, release string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	var okApp, okRelease bool
	for _, kv := range strings.Split(string(b), "\x00") {
		okApp = okApp || kv == "DEPLOYER_APP="+app
		okRelease = okRelease || kv == "DEPLOYER_RELEASE="+release
	}
	return okApp && okRelease
}
