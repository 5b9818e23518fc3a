package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// firstFD is where systemd puts the first passed descriptor (SD_LISTEN_FDS_START).
const firstFD = 3

// Inherited is one descriptor systemd passed: a socket of a socket unit, or
// an entry of the file descriptor store. The process owns FD (it is
// close-on-exec) until it turns it into a listener or connection, or closes it.
type Inherited struct {
	// Name is its LISTEN_FDNAMES entry: the FileDescriptorName= of its
	// socket unit (by default the unit's name, "deployer.socket"), or the
	// FDNAME= it was stored under. "" if systemd gave no names.
	Name string

	// FD is the descriptor number, 3 or more.
	FD int

	// Network is "tcp", "udp", "unix", "unixgram" or "unixpacket", or ""
	// for another kind of socket or a descriptor that is not a socket.
	Network string

	// Addr is the address the socket is bound to (a *net.TCPAddr,
	// *net.UDPAddr or *net.UnixAddr), or nil.
	Addr net.Addr

	// Listening says the socket listens (SO_ACCEPTCONN).
	Listening bool
}

// String describes the descriptor for logs: `fd 3 "git-http" tcp 127.0.0.1:7007 listening`.
func (in Inherited) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fd %d %q", in.FD, in.Name)
	switch {
	case in.Network == "":
		b.WriteString(" (not a socket we know)")
	case in.Addr != nil:
		fmt.Fprintf(&b, " %s %s", in.Network, in.Addr)
	default:
		fmt.Fprintf(&b, " %s", in.Network)
	}
	if in.Listening {
		b.WriteString(" listening")
	}
	return b.String()
}

// Listeners returns the descriptors systemd passed to this process (fd 3,
// 4, …, LISTEN_FDS of them, named by LISTEN_FDNAMES), in order. They are
// for this process only if LISTEN_PID is its pid; otherwise, or without
// LISTEN_FDS, it returns none and no error, as sd_listen_fds does.
//
// Whatever the outcome it unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES,
// and every descriptor it returns is close-on-exec, so no child inherits
// them. It reads what each one is (getsockname, getsockopt) and changes
// nothing else: not its blocking mode, not its socket options.
func Listeners() ([]Inherited, error) {
	defer unsetListenEnv()
	n, names, err := parseListenEnv()
	if err != nil || n == 0 {
		return nil, err
	}
	// Close-on-exec first, so that even on an error below no descriptor
	// leaks into a child.
	for i := range n {
		unix.CloseOnExec(firstFD + i)
	}
	out := make([]Inherited, n)
	for i := range n {
		fd := firstFD + i
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return nil, fmt.Errorf("inherited fd %d (%q): %w", fd, names[i], err)
		}
		out[i] = inspect(fd, names[i])
	}
	return out, nil
}

// parseListenEnv checks LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES and
// returns how many descriptors are ours and one name for each. It touches
// no descriptor.
func parseListenEnv() (int, []string, error) {
	pidStr, ok := os.LookupEnv("LISTEN_PID")
	if !ok {
		return 0, nil, nil
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return 0, nil, fmt.Errorf("LISTEN_PID=%q: %w", pidStr, ErrBadEnvironment)
	}
	if pid != os.Getpid() {
		return 0, nil, nil // passed to another process: our parent, most likely
	}
	nStr, ok := os.LookupEnv("LISTEN_FDS")
	if !ok {
		return 0, nil, nil
	}
	n, err := strconv.Atoi(nStr)
	// The bound keeps fd numbers sane; systemd passes a few hundred at most.
	if err != nil || n < 0 || n > 1<<16 {
		return 0, nil, fmt.Errorf("LISTEN_FDS=%q: %w", nStr, ErrBadEnvironment)
	}
	names := make([]string, n)
	if s, ok := os.LookupEnv("LISTEN_FDNAMES"); ok && n > 0 {
		given := strings.Split(s, ":")
		if len(given) != n {
			return 0, nil, fmt.Errorf("LISTEN_FDNAMES=%q names %d descriptors, LISTEN_FDS=%d: %w",
				s, len(given), n, ErrBadEnvironment)
		}
		names = given
	}
	return n, names, nil
}

func unsetListenEnv() {
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
}

// inspect reads what fd is without changing it.
func inspect(fd int, name string) Inherited {
	in := Inherited{Name: name, FD: fd}
	family, err1 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	typ, err2 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err1 != nil || err2 != nil {
		return in // not a socket (a pipe, a memfd from the store)
	}
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil {
		in.Listening = acc == 1
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return in
	}
	switch family {
	case unix.AF_INET, unix.AF_INET6:
		ip, port, zone := inetAddr(sa)
		switch typ {
		case unix.SOCK_STREAM:
			in.Network, in.Addr = "tcp", &net.TCPAddr{IP: ip, Port: port, Zone: zone}
		case unix.SOCK_DGRAM:
			in.Network, in.Addr = "udp", &net.UDPAddr{IP: ip, Port: port, Zone: zone}
		}
	case unix.AF_UNIX:
		switch typ {
		case unix.SOCK_STREAM:
			in.Network = "unix"
		case unix.SOCK_DGRAM:
			in.Network = "unixgram"
		case unix.SOCK_SEQPACKET:
			in.Network = "unixpacket"
		default:
			return in
		}
		if su, ok := sa.(*unix.SockaddrUnix); ok && su.Name != "@" { // "@" alone: unbound
			in.Addr = &net.UnixAddr{Name: su.Name, Net: in.Network}
		}
	}
	return in
}

func inetAddr(sa unix.Sockaddr) (net.IP, int, string) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.IP(a.Addr[:]).To16(), a.Port, ""
	case *unix.SockaddrInet6:
		zone := ""
		if a.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				zone = ifi.Name
			} else {
				zone = strconv.Itoa(int(a.ZoneId))
			}
		}
		return net.IP(a.Addr[:]), a.Port, zone
	}
	return nil, 0, ""
}

// Listener turns a listening stream socket (TCP or unix) into a
// net.Listener. The listener holds its own close-on-exec duplicate; on
// success in.FD is closed and must not be used again, on error it is left
// as it was. The socket is made non-blocking, as Go's poller needs, and is
// never made blocking: (*os.File).Fd is not called on a file that would do it.
func (in Inherited) Listener() (net.Listener, error) {
	switch {
	case !in.Listening:
		return nil, fmt.Errorf("%s: not listening: %w", in, ErrWrongKind)
	case in.Network != "tcp" && in.Network != "unix" && in.Network != "unixpacket":
		return nil, fmt.Errorf("%s: not a stream socket: %w", in, ErrWrongKind)
	}
	f, err := in.dupFile()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in, err)
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		// The path belongs to whoever bound it (systemd, or the daemon
		// before us), not to this listener: closing must not unlink it.
		ul.SetUnlinkOnClose(false)
	}
	unix.Close(in.FD)
	return ln, nil
}

// UnixConn turns a unix datagram socket into a *net.UnixConn, with the same
// rules as [Inherited.Listener]: on success in.FD is closed, on error left
// open, and the socket is never made blocking.
func (in Inherited) UnixConn() (*net.UnixConn, error) {
	if in.Network != "unixgram" {
		return nil, fmt.Errorf("%s: not a unix datagram socket: %w", in, ErrWrongKind)
	}
	f, err := in.dupFile()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%s: got a %T: %w", in, c, ErrWrongKind)
	}
	unix.Close(in.FD)
	return uc, nil
}

// File hands in.FD over to an *os.File, for a descriptor that is not a
// socket (a pipe or a memfd from the store). os.NewFile leaves its blocking
// mode alone, and Fd on that file does too.
func (in Inherited) File() *os.File {
	return os.NewFile(uintptr(in.FD), in.label())
}

// Close closes in.FD, for a descriptor nobody claimed.
func (in Inherited) Close() error {
	if err := unix.Close(in.FD); err != nil {
		return fmt.Errorf("close %s: %w", in, err)
	}
	return nil
}

// dupFile wraps a close-on-exec duplicate of in.FD in an *os.File. Working
// on a duplicate keeps in.FD out of the os.File's finalizer, so that on an
// error it is still the caller's. os.NewFile never sets the file's
// "we made it non-blocking" mark, so net's call to Fd on it changes nothing.
func (in Inherited) dupFile() (*os.File, error) {
	fd, err := unix.FcntlInt(uintptr(in.FD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: dup: %w", in, err)
	}
	f := os.NewFile(uintptr(fd), in.label())
	if f == nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: dup: %w", in, errors.ErrUnsupported)
	}
	return f, nil
}

func (in Inherited) label() string {
	if in.Name == "" {
		return "fd " + strconv.Itoa(in.FD)
	}
	return in.Name
}
