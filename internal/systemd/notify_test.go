package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeSystemd is the receiving end of NOTIFY_SOCKET, as systemd holds it:
// a unix datagram socket with SO_PASSCRED, so each message carries the
// sender's pid.
type fakeSystemd struct {
	t    *testing.T
	conn *net.UnixConn
}

// listenNotify binds name ("@…" for an abstract socket) and points
// NOTIFY_SOCKET at it for the test.
func listenNotify(t *testing.T, name string) *fakeSystemd {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	t.Setenv("NOTIFY_SOCKET", name)
	return &fakeSystemd{t: t, conn: conn}
}

// message is one datagram as systemd sees it.
type message struct {
	state string
	pid   int
	fds   []int // received duplicates, closed at the end of the test
}

func (s *fakeSystemd) receive() message {
	s.t.Helper()
	if err := s.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		s.t.Fatal(err)
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4)+unix.CmsgSpace(unix.SizeofUcred))
	n, oobn, flags, _, err := s.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		s.t.Fatalf("no notification: %v", err)
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		s.t.Fatalf("truncated message, flags %#x", flags)
	}
	m := message{state: string(buf[:n])}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		s.t.Fatal(err)
	}
	for _, c := range cmsgs {
		switch c.Header.Type {
		case unix.SCM_RIGHTS:
			fds, err := unix.ParseUnixRights(&c)
			if err != nil {
				s.t.Fatal(err)
			}
			for _, fd := range fds {
				s.t.Cleanup(func() { unix.Close(fd) })
			}
			m.fds = append(m.fds, fds...)
		case unix.SCM_CREDENTIALS:
			cred, err := unix.ParseUnixCredentials(&c)
			if err != nil {
				s.t.Fatal(err)
			}
			m.pid = int(cred.Pid)
		}
	}
	return m
}

func TestNotifyWithoutNotifySocketSendsNothingAndSucceeds(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify(Ready); err != nil {
		t.Fatalf("Notify without NOTIFY_SOCKET: %v", err)
	}
	if err := NotifyWithFDs(Ready, []int{0}); err != nil {
		t.Fatalf("NotifyWithFDs without NOTIFY_SOCKET: %v", err)
	}
	if err := StoreFDs("git-http", 0); err != nil {
		t.Fatalf("StoreFDs without NOTIFY_SOCKET: %v", err)
	}
}

func TestNotifyReachesAPathSocketAsOneMessageFromOurPid(t *testing.T) {
	sd := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	if err := Notify(Ready + "\n" + Status("2 apps live:\nhello v3")); err != nil {
		t.Fatal(err)
	}
	m := sd.receive()
	if want := "READY=1\nSTATUS=2 apps live: hello v3"; m.state != want {
		t.Errorf("systemd got %q, want %q", m.state, want)
	}
	if m.pid != os.Getpid() {
		t.Errorf("sender pid %d, want ours %d (NotifyAccess=main checks it)", m.pid, os.Getpid())
	}
	if len(m.fds) != 0 {
		t.Errorf("got %d descriptors with a plain notification", len(m.fds))
	}
}

func TestNotifyReachesAnAbstractSocket(t *testing.T) {
	name := fmt.Sprintf("@deployer-systemd-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	sd := listenNotify(t, name)
	if err := Notify(Stopping); err != nil {
		t.Fatal(err)
	}
	if m := sd.receive(); m.state != Stopping {
		t.Errorf("systemd got %q, want %q", m.state, Stopping)
	}
}

func TestNotifyRefusesANotifySocketThatIsNeitherPathNorAbstract(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "run/notify")
	if err := Notify(Ready); !errors.Is(err, ErrBadEnvironment) {
		t.Fatalf("Notify with a relative NOTIFY_SOCKET: %v, want ErrBadEnvironment", err)
	}
}

func TestNotifyToAMissingSocketFails(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens"))
	if err := Notify(Ready); err == nil {
		t.Fatal("Notify to a socket nobody bound succeeded")
	}
}

func TestReloadingCarriesTheMonotonicClock(t *testing.T) {
	sd := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	before := monotonicUsec(t)
	if err := Notify(Reloading()); err != nil {
		t.Fatal(err)
	}
	after := monotonicUsec(t)
	m := sd.receive()
	first, rest, _ := strings.Cut(m.state, "\n")
	if first != "RELOADING=1" {
		t.Fatalf("systemd got %q, want RELOADING=1 first", m.state)
	}
	v, ok := strings.CutPrefix(rest, "MONOTONIC_USEC=")
	usec, err := strconv.ParseInt(v, 10, 64)
	if !ok || err != nil {
		t.Fatalf("systemd got %q, want MONOTONIC_USEC=<integer> on the second line", m.state)
	}
	if usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%d, want between %d and %d (CLOCK_MONOTONIC in µs)", usec, before, after)
	}
}

func monotonicUsec(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Sec*1_000_000 + ts.Nsec/1_000
}

func TestMessageHelpersSpellSystemdFields(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{MainPID(4242), "MAINPID=4242"},
		{ExtendTimeout(90 * time.Second), "EXTEND_TIMEOUT_USEC=90000000"},
		{Status("a\r\nb\nc"), "STATUS=a b c"},
		{Ready, "READY=1"},
		{Stopping, "STOPPING=1"},
		{Watchdog, "WATCHDOG=1"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// TestStoreConnHandsSystemdTheSameSocketAndLeavesItNonBlocking plays
// systemd's fd store: the descriptor it receives must be the listener's own
// socket (same inode, same address, and a connection queued on the
// listener is accepted through it), and storing must not have switched the
// shared socket to blocking mode.
func TestStoreConnHandsSystemdTheSameSocketAndLeavesItNonBlocking(t *testing.T) {
	sd := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tl := ln.(*net.TCPListener)

	if err := StoreConn(NameGitHTTP, tl); err != nil {
		t.Fatal(err)
	}
	m := sd.receive()
	if want := "FDSTORE=1\nFDNAME=git-http"; m.state != want {
		t.Errorf("systemd got %q, want %q", m.state, want)
	}
	if len(m.fds) != 1 {
		t.Fatalf("systemd got %d descriptors, want 1", len(m.fds))
	}
	got := m.fds[0]
	if addr := sockname(t, got); addr != ln.Addr().String() {
		t.Errorf("received socket bound to %s, want the listener's %s", addr, ln.Addr())
	}
	if a, b := inode(t, got), connInode(t, tl); a != b {
		t.Errorf("received socket inode %d, listener's %d: not the same socket", a, b)
	}
	if !connNonBlocking(t, tl) {
		t.Error("storing the listener switched it to blocking mode")
	}

	// A connection queued on the listener comes out of the received copy.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nfd, _, err := acceptWithin(got, 10*time.Second)
	if err != nil {
		t.Fatalf("accept on the received descriptor: %v", err)
	}
	unix.Close(nfd)
}

func TestNotifyWithFDsPassesSeveralDescriptorsInOrder(t *testing.T) {
	sd := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	path := filepath.Join(t.TempDir(), "control.sock")
	ux, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ux.Close()

	fds := []int{connFD(t, tcp.(syscall.Conn)), connFD(t, ux.(syscall.Conn))}
	if err := NotifyWithFDs("FDSTORE=1\nFDNAME=pair", fds); err != nil {
		t.Fatal(err)
	}
	m := sd.receive()
	if len(m.fds) != 2 {
		t.Fatalf("systemd got %d descriptors, want 2", len(m.fds))
	}
	if got := sockname(t, m.fds[0]); got != tcp.Addr().String() {
		t.Errorf("first descriptor bound to %s, want %s", got, tcp.Addr())
	}
	if got := sockname(t, m.fds[1]); got != path {
		t.Errorf("second descriptor bound to %s, want %s", got, path)
	}
	// The caller's descriptors are still open and still its own.
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			t.Errorf("fd %d closed by NotifyWithFDs: %v", fd, err)
		}
	}
}

func TestNotifyWithFDsRefusesMoreThanOneMessageCarries(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "notify.sock"))
	fds := make([]int, maxFDs+1)
	if err := NotifyWithFDs("FDSTORE=1", fds); !errors.Is(err, ErrTooManyFDs) {
		t.Fatalf("NotifyWithFDs with %d fds: %v, want ErrTooManyFDs", len(fds), err)
	}
}

func TestStoreTakesOnlyNamesSystemdAccepts(t *testing.T) {
	sd := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	for _, name := range []string{"", "hello:0", "a\nb", "tab\there", "café", strings.Repeat("x", 256)} {
		if err := StoreFDs(name, 0); !errors.Is(err, ErrBadFDName) {
			t.Errorf("StoreFDs(%q): %v, want ErrBadFDName", name, err)
		}
		if err := RemoveFDs(name); !errors.Is(err, ErrBadFDName) {
			t.Errorf("RemoveFDs(%q): %v, want ErrBadFDName", name, err)
		}
	}
	for _, name := range []string{"hello.0", "git-http", "app/hello/127.0.0.1", "with space", strings.Repeat("x", 255)} {
		if err := RemoveFDs(name); err != nil {
			t.Errorf("RemoveFDs(%q): %v", name, err)
			continue
		}
		if m := sd.receive(); m.state != "FDSTOREREMOVE=1\nFDNAME="+name {
			t.Errorf("systemd got %q for RemoveFDs(%q)", m.state, name)
		}
	}
}

// connFD reads c's descriptor the way the package does, without Fd.
func connFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

func connNonBlocking(t *testing.T, c syscall.Conn) bool {
	t.Helper()
	return nonBlocking(t, connFD(t, c))
}

func connInode(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	return inode(t, connFD(t, c))
}

func nonBlocking(t *testing.T, fd int) bool {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fl&unix.O_NONBLOCK != 0
}

func inode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// sockname is fd's bound address as the net package prints it.
func sockname(t *testing.T, fd int) string {
	t.Helper()
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrUnix:
		return a.Name
	}
	t.Fatalf("fd %d: unexpected address %T", fd, sa)
	return ""
}

// acceptWithin accepts on a raw listening descriptor, waiting with poll(2)
// up to d for a connection.
func acceptWithin(fd int, d time.Duration) (int, unix.Sockaddr, error) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return -1, nil, fmt.Errorf("no connection within %s", d)
		}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, nil, err
		}
		if n > 0 {
			return unix.Accept4(fd, unix.SOCK_CLOEXEC)
		}
	}
}
