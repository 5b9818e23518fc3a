package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StopAccepting is the cut-over's end for a pool being replaced: it sends
// every worker its stop signal now (the drain begins, bounded by
// DrainTimeout as ever) and returns once none of the pool's processes
// holds any of its sockets open, or timeout passes, saying which. A worker
// that follows the protocol closes its listeners on the stop signal, so
// that from then on every new connection goes to the pool that replaced
// this one; Stop still waits for the drain's end.
func (p *Pool) StopAccepting(timeout time.Duration) error {
	inodes := map[uint64]bool{}
	for _, s := range p.spec.Sockets {
		if ino, err := s.inode(); err == nil {
			inodes[ino] = true
		}
	}
	for _, w := range p.workers {
		w.Retire()
	}
	deadline := time.Now().Add(timeout)
	for {
		var holding []int
		for _, w := range p.workers {
			if pid := w.holding(inodes); pid > 0 {
				holding = append(holding, pid)
			}
		}
		if len(holding) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: pids %v still hold the app's socket %s after the stop signal", p.spec.Release, holding, timeout)
		}
		time.Sleep(5 * time.Millisecond) // the kernel says nothing when a process closes a descriptor
	}
}

// holding is a process of the worker that still holds one of the sockets
// (by inode) open, or the worker's own pid while its stop signal is not
// sent yet; 0 once none holds them.
func (w *worker) holding(inodes map[uint64]bool) int {
	w.mu.Lock()
	pid, state, group, since := w.status.PID, w.status.State, w.group, w.drainSince
	w.mu.Unlock()
	if state == Stopped || pid <= 0 {
		return 0
	}
	if since.IsZero() && state != Backoff && state != CrashLoop {
		return pid // the stop signal is not sent yet
	}
	for _, p := range w.procsOf(pid, group) {
		if holdsAny(p, inodes) {
			return p
		}
	}
	return 0
}

// procs are the worker's processes now: its cgroup's, or its process and
// those below it; none while it has no process.
func (w *worker) procs() []int {
	w.mu.Lock()
	pid, group := w.status.PID, w.group
	w.mu.Unlock()
	if pid <= 0 {
		return nil
	}
	return w.procsOf(pid, group)
}

// cgroupUsage is the CPU time the worker's current process and all it
// started have used, from its cgroup; -1 where it has none.
func (w *worker) cgroupUsage() time.Duration {
	w.mu.Lock()
	group := w.group
	w.mu.Unlock()
	if group == "" || w.spec.cgroups == nil {
		return -1
	}
	d, ok := w.spec.cgroups.CPUUsage(group)
	if !ok {
		return -1
	}
	return d
}

func (w *worker) procsOf(pid int, group string) []int {
	if group != "" && w.spec.cgroups != nil {
		return w.spec.cgroups.Procs(group)
	}
	return descendants(pid)
}

// holdsAny reports whether process pid has a descriptor on a socket whose
// inode is in inodes.
func holdsAny(pid int, inodes map[uint64]bool) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(link, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil && inodes[ino] {
				return true
			}
		}
	}
	return false
}

// descendants is pid and every process below it.
func descendants(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out) && i < 4096; i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", out[i]))
		for _, t := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", out[i], t.Name()))
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// inode is the socket's inode number, as /proc/PID/fd names it.
func (s *Socket) inode() (uint64, error) {
	var st syscall.Stat_t
	var serr error
	if err := s.Control(func(fd int) { serr = syscall.Fstat(fd, &st) }); err != nil {
		return 0, err
	}
	return st.Ino, serr
}
