package supervisor

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Socket is one listening socket the daemon holds for an app. The daemon
// never accepts on it, shuts it down or closes it while workers may use it;
// workers inherit it, so its accept queue outlives every worker.
type Socket struct {
	Addr string // as configured
	Name string // LISTEN_FDNAMES entry
	ln   *net.TCPListener
	fd   int // raw descriptor, read once without touching its flags

	// OnClose, if set, runs when the socket is closed for good (not when
	// detached): the owner drops the keeper's copy then.
	OnClose func()

	mu     sync.Mutex
	closed bool
}

// SocketFromFile makes a Socket of a listening TCP socket the daemon got
// from elsewhere (socket activation, or the keeper after a restart) without
// switching it to blocking mode. f is closed; the Socket holds its own copy.
func SocketFromFile(f *os.File, addr, name string) (*Socket, error) {
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("inherited socket for %s: %w", addr, err)
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("inherited socket for %s: not a TCP listener", addr)
	}
	s := &Socket{Addr: addr, Name: name, ln: tl}
	if err := s.readFD(); err != nil {
		ln.Close()
		return nil, err
	}
	s.noDelay()
	return s, nil
}

// ListenSockets opens one socket per address, in order. If an address is
// still held by a previous daemon's workers it retries until wait passes.
func ListenSockets(app string, addrs []string, wait time.Duration) ([]*Socket, error) {
	var out []*Socket
	for i, addr := range addrs {
		s, err := ListenSocket(addr, fmt.Sprintf("%s-%d", app, i), wait)
		if err != nil {
			CloseSockets(out)
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// privateSockets opens n loopback sockets on ephemeral ports, for preflight.
func privateSockets(app string, n int) ([]*Socket, error) {
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = "127.0.0.1:0"
	}
	return ListenSockets(app, addrs, 0)
}

// ListenSocket opens one socket named name (its LISTEN_FDNAMES entry),
// retrying until wait passes while the address is still held.
func ListenSocket(addr, name string, wait time.Duration) (*Socket, error) {
	deadline := time.Now().Add(wait)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			s := &Socket{Addr: addr, Name: name, ln: ln.(*net.TCPListener)}
			if err := s.readFD(); err != nil {
				ln.Close()
				return nil, err
			}
			s.noDelay()
			return s, nil
		}
		// A previous daemon's workers may still be draining on this port.
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond) // bounded by deadline: the kernel gives no event for a port freed
	}
}

// noDelay sets TCP_NODELAY on the listening socket, as systemd's
// NoDelay=yes does: every connection accepted from it starts with Nagle's
// algorithm off, whatever the server does. Servers that never set it on
// the connections of an inherited socket (uvicorn treats fd 3 as if it
// could be a Unix socket) otherwise answer small responses after the
// delayed-ACK timer: 40 ms each on keep-alive. A server may still turn it
// on again per connection.
func (s *Socket) noDelay() {
	_ = unix.SetsockoptInt(s.fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
}

// SetDeferAccept sets TCP_DEFER_ACCEPT on the listening socket, as
// systemd's DeferAcceptSec= does: the kernel hands a connection to accept
// only once its first bytes have arrived (or d has passed). A worker then
// never holds a connection whose request is still on its way, the window
// in which a server that stops (puma, Node's closeIdleConnections) closes
// it as idle and the client's request is lost. 0 turns it off; the kernel
// counts whole seconds.
func (s *Socket) SetDeferAccept(d time.Duration) error {
	secs := int(min((d+time.Second-1)/time.Second, math.MaxInt32)) // the kernel takes a C int
	if err := unix.SetsockoptInt(s.fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs); err != nil {
		return fmt.Errorf("TCP_DEFER_ACCEPT on %s: %w", s.Addr, err)
	}
	return nil
}

// readFD fetches the raw descriptor through SyscallConn, which, unlike
// (*os.File).Fd, does not switch the socket to blocking mode (golang/go#43894).
func (s *Socket) readFD() error {
	rc, err := s.ln.SyscallConn()
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.Addr, err)
	}
	return rc.Control(func(fd uintptr) { s.fd = int(fd) })
}

// LocalAddr is the bound address (the real port for ":0").
func (s *Socket) LocalAddr() string { return s.ln.Addr().String() }

// FD is the raw descriptor, or ErrSocketClosed once the socket is closed:
// the number may by then name another file.
func (s *Socket) FD() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return -1, fmt.Errorf("%s: %w", s.Addr, ErrSocketClosed)
	}
	return s.fd, nil
}

// Close closes the socket for good. Only for daemon shutdown, an app's
// removal and private sockets.
func (s *Socket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.OnClose != nil {
		s.OnClose()
	}
	return s.ln.Close()
}

// Detach closes the daemon's copy of the socket only: the workers and the
// keeper hold theirs, and the next daemon takes it back.
func (s *Socket) Detach() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.ln.Close()
	}
}

// Control runs f with the socket's raw descriptor, for handing a copy to
// the keeper; it fails once the socket is closed.
func (s *Socket) Control(f func(fd int)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("%s: %w", s.Addr, ErrSocketClosed)
	}
	f(s.fd)
	return nil
}

// CloseSockets closes every socket in ss.
func CloseSockets(ss []*Socket) {
	for _, s := range ss {
		s.Close()
	}
}

func fdNames(ss []*Socket) string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.Name
	}
	return strings.Join(names, ":")
}

// SocketFromWorkers takes app's listening socket on addr back from a
// running worker (pidfd_getfd): for when no other copy survived a crash
// (the keeper died while no daemon ran) and the workers' hold on the
// address keeps it from being opened again. The worker got it as fd 3+i,
// but an app may have moved it since, so every socket the worker holds is
// looked at, and only a listening TCP socket bound to addr's port is taken.
// Only a recorded worker whose pid still names the same process (start
// time) is used. It needs the right to ptrace the worker (the daemon's user
// with a permissive kernel.yama.ptrace_scope, or CAP_SYS_PTRACE).
func SocketFromWorkers(recs []WorkerRecord, app, addr, name string) (*Socket, error) {
	_, port, _ := net.SplitHostPort(addr)
	last := errors.New("no recorded worker runs")
	for _, rec := range recs {
		pidfd, err := unix.PidfdOpen(rec.PID, 0)
		if err != nil {
			continue
		}
		if ticks, err := startTicks(rec.PID); err != nil || ticks != rec.Started || !isWorkerOfApp(rec.PID, app) {
			unix.Close(pidfd)
			continue
		}
		s, err := listenerOf(pidfd, rec.PID, port, addr, name)
		unix.Close(pidfd)
		if err == nil {
			return s, nil
		}
		last = err
	}
	return nil, fmt.Errorf("take %s back from a worker: %w", addr, last)
}

// listenerOf takes the listening TCP socket on port from process pid.
func listenerOf(pidfd, pid int, port, addr, name string) (*Socket, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		n, cerr := strconv.Atoi(e.Name())
		if err != nil || cerr != nil || !strings.HasPrefix(target, "socket:") {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, n, 0)
		if err != nil {
			return nil, fmt.Errorf("take fd %d of pid %d: %w", n, pid, err)
		}
		if !listeningOn(fd, port) {
			unix.Close(fd)
			continue
		}
		return SocketFromFile(os.NewFile(uintptr(fd), name), addr, name)
	}
	return nil, fmt.Errorf("pid %d holds no socket listening on port %s", pid, port)
}

// listeningOn reports whether fd is a listening TCP socket on port.
func listeningOn(fd int, port string) bool {
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
		return false
	}
	if t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || t != unix.SOCK_STREAM {
		return false
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return strconv.Itoa(a.Port) == port
	case *unix.SockaddrInet6:
		return strconv.Itoa(a.Port) == port
	}
	return false
}

// isWorkerOfApp reports whether pid was started as a worker of app.
func isWorkerOfApp(pid int, app string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	return err == nil && slices.Contains(strings.Split(string(b), "\x00"), "DEPLOYER_APP="+app)
}
