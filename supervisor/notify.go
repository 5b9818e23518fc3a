package supervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Notifier is the daemon's sd_notify socket (NOTIFY_SOCKET). Workers send
// READY=1, STATUS=... and STOPPING=1 datagrams to it; each is attributed to
// a worker by the sender's pid, which the kernel reports (SO_PASSCRED), so
// one process cannot speak for another.
type Notifier struct {
	path string
	conn *net.UnixConn

	mu      sync.Mutex
	waiters map[int]chan<- string // pid -> the worker that owns it
	early   map[int][]earlyMsg    // messages from a pid not registered yet
}

// earlyMsg is a message that arrived before its worker registered: a worker
// can say READY=1 before the spawning goroutine got to register its pid.
type earlyMsg struct {
	at  time.Time
	msg string
}

// earlyTTL bounds how long an unclaimed message is kept: a pid that never
// registers (a worker's child, a process gone since) must not hand a stale
// READY=1 to a later worker that reuses its pid.
const earlyTTL = 5 * time.Second

// ListenNotify opens the notify socket at path, owner-only.
func ListenNotify(path string) (*Notifier, error) {
	if len(path) > 107 {
		return nil, fmt.Errorf("notify socket %s: longer than a unix socket path may be (107 bytes): use a shorter data_dir", path)
	}
	_ = os.Remove(path)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
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
	n := &Notifier{path: path, conn: conn, waiters: map[int]chan<- string{}, early: map[int][]earlyMsg{}}
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
		for _, line := range strings.Split(string(buf[:nb]), "\n") {
			if line != "" {
				n.deliver(pid, line)
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

func (n *Notifier) deliver(pid int, msg string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch, ok := n.waiters[pid]; ok {
		select {
		case ch <- msg:
		default: // the worker is not listening for more; drop
		}
		return
	}
	now := time.Now()
	for p, msgs := range n.early {
		if now.Sub(msgs[len(msgs)-1].at) > earlyTTL {
			delete(n.early, p)
		}
	}
	if len(n.early[pid]) < 16 {
		n.early[pid] = append(n.early[pid], earlyMsg{at: now, msg: msg})
	}
}

// register routes pid's messages to ch, including any that arrived before.
func (n *Notifier) register(pid int, ch chan<- string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.waiters[pid] = ch
	for _, m := range n.early[pid] {
		if time.Since(m.at) > earlyTTL {
			continue
		}
		select {
		case ch <- m.msg:
		default:
		}
	}
	delete(n.early, pid)
}

func (n *Notifier) unregister(pid int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.waiters, pid)
	delete(n.early, pid)
}
