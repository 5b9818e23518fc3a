package supervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/deployer/deployer/internal/cgroup"
)

// Notifier is the daemon's sd_notify socket (NOTIFY_SOCKET). Workers send
// READY=1, STATUS=... and STOPPING=1 datagrams to it; each is attributed to
// a worker by the sender's pid, which the kernel reports (SO_PASSCRED):
//   - where the worker has a cgroup, to the worker whose cgroup holds the
//     sender (the worker's process or anything it forked, as systemd's
//     NotifyAccess=all), and to no other;
//   - otherwise to the worker whose process is the sender.
//
// A process can claim another's pid only with CAP_SYS_ADMIN, so an app that
// runs as a user of its own (apps.APP.user) cannot speak for another app.
type Notifier struct {
	path string
	conn *net.UnixConn

	mu      sync.Mutex
	within  string            // if set, messages from outside this cgroup are dropped
	waiters map[int]waiter    // pid -> the worker that owns it
	groups  map[string]waiter // cgroup path -> the worker that owns it
	early   []earlyMsg        // messages from senders not registered yet
}

type waiter struct {
	ch  chan<- string
	pid int
	cg  string // the worker's cgroup; "" if none
}

// earlyMsg is a message that arrived before its worker registered: a worker
// can say READY=1 before the spawning goroutine got to register its pid.
type earlyMsg struct {
	at  time.Time
	pid int
	cg  string // the sender's cgroup when it arrived
	msg string
}

// maxEarly bounds the messages kept for senders not registered yet, and
// maxEarlyPerGroup those of one cgroup: a worker says little before it is
// registered (READY=1, a STATUS=).
const (
	maxEarly         = 256
	maxEarlyPerGroup = 8
)

func countFunc[T any](s []T, f func(T) bool) int {
	n := 0
	for _, v := range s {
		if f(v) {
			n++
		}
	}
	return n
}

// earlyTTL bounds how long an unclaimed message is kept: a pid that never
// registers (a worker's child, a process gone since) must not hand a stale
// READY=1 to a later worker that reuses its pid.
const earlyTTL = 5 * time.Second

// OnlyFrom drops, from now on, every message whose sender is not in a
// cgroup below tree (the daemon's cgroup tree): the socket is open to
// every local user, for apps that run as users of their own, and no one
// else may fill the queue of messages waiting for their worker.
func (n *Notifier) OnlyFrom(tree string) {
	n.mu.Lock()
	n.within = tree
	n.mu.Unlock()
}

// ListenNotify opens the notify socket at path, writable by every local
// user: apps may run as users of their own. Who may be heard is decided
// per message (see Notifier).
func ListenNotify(path string) (*Notifier, error) {
	if len(path) > 107 {
		return nil, fmt.Errorf("notify socket %s: longer than a unix socket path may be (107 bytes): use a shorter data_dir", path)
	}
	_ = os.Remove(path)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	if err := os.Chmod(path, 0o622); err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	return newNotifier(path, conn)
}

// NotifierFromFile serves a notify socket bound at path that the daemon
// got back from the keeper. f is closed; the Notifier holds its own copy.
func NotifierFromFile(f *os.File, path string) (*Notifier, error) {
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("notify socket: not a unix datagram socket")
	}
	return newNotifier(path, conn)
}

func newNotifier(path string, conn *net.UnixConn) (*Notifier, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket: SO_PASSCRED: %w", errors.Join(err, serr))
	}
	n := &Notifier{path: path, conn: conn, waiters: map[int]waiter{}, groups: map[string]waiter{}}
	go n.serve()
	return n, nil
}

// Control runs f with the socket's raw descriptor, for handing a copy to
// the keeper.
func (n *Notifier) Control(f func(fd int)) error {
	rc, err := n.conn.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { f(int(fd)) })
}

// Detach stops reading, leaving the socket bound for the next daemon, which
// takes it back from the keeper.
func (n *Notifier) Detach() { n.conn.Close() }

// Path is the value of NOTIFY_SOCKET.
func (n *Notifier) Path() string { return n.path }

// Close stops the notifier.
func (n *Notifier) Close() error {
	err := n.conn.Close()
	os.Remove(n.path)
	return err
}

func (n *Notifier) serve() {
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	for {
		nb, noob, _, _, err := n.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		pid := senderPID(oob[:noob])
		if pid <= 0 {
			continue
		}
		cg := cgroup.Of(pid) // the sender's, read at once: the pid may go
		for _, line := range strings.Split(string(buf[:nb]), "\n") {
			if line != "" {
				n.deliver(pid, cg, line)
			}
		}
	}
}

func senderPID(oob []byte) int {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if cred, err := syscall.ParseUnixCredentials(&m); err == nil {
			return int(cred.Pid)
		}
	}
	return 0
}

// deliver routes msg from pid, which is in cgroup cg ("" if unknown).
func (n *Notifier) deliver(pid int, cg, msg string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.within != "" && !strings.HasPrefix(cg, n.within+"/") {
		return
	}
	w, ok := n.waiters[pid]
	if ok && w.cg != "" && cg != w.cg {
		ok = false // a recycled pid, now outside the worker's group
	}
	if !ok && cg != "" {
		w, ok = n.groups[cg]
	}
	if ok {
		select {
		case w.ch <- msg:
		default: // the worker is not listening for more; drop
		}
		return
	}
	now := time.Now()
	n.early = slices.DeleteFunc(n.early, func(m earlyMsg) bool { return now.Sub(m.at) > earlyTTL })
	// One sender's group (an app's build, a worker's leftover) may not
	// fill the queue that the early messages of every other app's workers
	// wait in.
	if cg != "" && countFunc(n.early, func(m earlyMsg) bool { return m.cg == cg }) >= maxEarlyPerGroup {
		return
	}
	if len(n.early) < maxEarly {
		n.early = append(n.early, earlyMsg{at: now, pid: pid, cg: cg, msg: msg})
	}
}

// register routes to ch the messages of pid or, if cg is set, of any
// process in cgroup cg, including those that arrived before.
func (n *Notifier) register(pid int, cg string, ch chan<- string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := waiter{ch: ch, pid: pid, cg: cg}
	n.waiters[pid] = w
	if cg != "" {
		n.groups[cg] = w
	}
	n.early = slices.DeleteFunc(n.early, func(m earlyMsg) bool {
		if time.Since(m.at) > earlyTTL {
			return true
		}
		// A worker in a group of its own claims what was sent from that
		// group; the same pid in another group is an earlier process that
		// had the pid (another app's, maybe), not this worker.
		if (cg == "" && m.pid != pid) || (cg != "" && m.cg != cg) {
			return false
		}
		select {
		case ch <- m.msg:
		default:
		}
		return true
	})
}

func (n *Notifier) unregister(pid int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if w, ok := n.waiters[pid]; ok && w.cg != "" && n.groups[w.cg].pid == pid {
		delete(n.groups, w.cg)
	}
	delete(n.waiters, pid)
	n.early = slices.DeleteFunc(n.early, func(m earlyMsg) bool { return m.pid == pid })
}
