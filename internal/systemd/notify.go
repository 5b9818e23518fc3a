package systemd

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// States for [Notify]. Join several with "\n" to send them in one message.
const (
	// Ready says startup is over, or that a reload begun with [Reloading]
	// is done. With Type=notify systemd counts the service as started only
	// once it arrives.
	Ready = "READY=1"

	// Stopping says the daemon is shutting down (it drains its workers).
	Stopping = "STOPPING=1"

	// Watchdog is the keep-alive ping; see [WatchdogInterval].
	Watchdog = "WATCHDOG=1"
)

// maxFDs is the kernel's SCM_MAX_FD: the most descriptors one message carries.
const maxFDs = 253

// maxFDName is the longest name systemd accepts for a descriptor.
const maxFDName = 255

// sendTimeout bounds one notification: systemd reads its socket promptly, so
// a full queue means it is stuck, and the daemon must not be.
const sendTimeout = 5 * time.Second

// Reloading is the message that starts a reload (SIGHUP, SIGUSR2):
// RELOADING=1 with MONOTONIC_USEC= set to now on CLOCK_MONOTONIC, which
// systemd ≥ 253 requires for Type=notify-reload and older versions ignore.
// Send [Ready] when the reload is done.
func Reloading() string {
	var ts unix.Timespec
	// CLOCK_MONOTONIC cannot fail on Linux; a zero time would only make
	// systemd ignore the timestamp.
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	usec := ts.Sec*1_000_000 + ts.Nsec/1_000
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10)
}

// Status is a one-line status for `systemctl status` (STATUS=). A newline
// would end the field, so newlines become spaces.
func Status(text string) string {
	return "STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(text)
}

// MainPID names pid as the service's main process (MAINPID=). The old
// daemon of an upgrade sends it, with the new daemon's pid, before it exits.
func MainPID(pid int) string {
	return "MAINPID=" + strconv.Itoa(pid)
}

// ExtendTimeout asks systemd to wait d longer than the current start, stop
// or reload timeout from now (EXTEND_TIMEOUT_USEC=), for a drain that takes
// longer than TimeoutStopSec= foresaw.
func ExtendTimeout(d time.Duration) string {
	return "EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10)
}

// Notify sends state to systemd as one datagram on $NOTIFY_SOCKET, a path
// or an abstract socket ("@name"). Without NOTIFY_SOCKET it does nothing
// and returns nil.
func Notify(state string) error {
	return NotifyWithFDs(state, nil)
}

// NotifyWithFDs is [Notify] with the descriptors fds attached (SCM_RIGHTS):
// systemd receives duplicates, and fds stay open and the caller's. Without
// NOTIFY_SOCKET it does nothing and returns nil. Take a socket's descriptor
// with [StoreConn] or SyscallConn().Control, never (*os.File).Fd.
func NotifyWithFDs(state string, fds []int) error {
	addr, err := notifyAddr()
	if err != nil || addr == "" {
		return err
	}
	if len(fds) > maxFDs {
		return fmt.Errorf("notify %s: %d descriptors: %w", summary(state), len(fds), ErrTooManyFDs)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := sendTo(addr, []byte(state), oob); err != nil {
		return fmt.Errorf("notify %s: %w", summary(state), err)
	}
	return nil
}

// sendTo sends one datagram from a fresh unbound socket. The net package
// will not send ancillary data on a connected datagram socket and has no
// unconnected one that is not bound, so this goes through the system calls.
func sendTo(addr string, b, oob []byte) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(sendTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return err
	}
	// x/sys maps a leading '@' to the abstract namespace.
	to := &unix.SockaddrUnix{Name: addr}
	for {
		// A socket with a send timeout is not restarted after a signal,
		// and the Go runtime signals its threads (preemption).
		err = unix.Sendmsg(fd, b, oob, to, 0)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// StoreFDs hands systemd a copy of each of fds to keep under name in the
// service's file descriptor store (FDSTORE=1, FDNAME=name). When the
// service's main process dies and systemd restarts it, they come back
// through [Listeners] under that name. The store needs
// FileDescriptorStoreMax= in the unit; without it systemd drops them (and
// logs it). fds stay open and the caller's.
//
// Store only what systemd did not pass: a socket that came from a socket
// unit is passed again anyway, and a stored copy of it would come back as a
// second descriptor of the same socket.
func StoreFDs(name string, fds ...int) error {
	if err := checkFDName(name); err != nil {
		return fmt.Errorf("store %q: %w", name, err)
	}
	return NotifyWithFDs("FDSTORE=1\nFDNAME="+name, fds)
}

// StoreConn stores c's descriptor under name, as [StoreFDs], reading it
// through SyscallConn so that its blocking mode is left alone. c may be a
// *net.TCPListener, *net.UnixListener, *net.UnixConn or *os.File.
func StoreConn(name string, c syscall.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("store %q: %w", name, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = StoreFDs(name, int(fd)) }); err != nil {
		return fmt.Errorf("store %q: %w", name, err)
	}
	return serr
}

// RemoveFDs drops every descriptor stored under name (FDSTOREREMOVE=1), as
// when an app is removed from the config.
func RemoveFDs(name string) error {
	if err := checkFDName(name); err != nil {
		return fmt.Errorf("unstore %q: %w", name, err)
	}
	return Notify("FDSTOREREMOVE=1\nFDNAME=" + name)
}

// notifyAddr is $NOTIFY_SOCKET, or "" when it is unset.
func notifyAddr() (string, error) {
	name := os.Getenv("NOTIFY_SOCKET")
	// Other forms (systemd ≥ 254 also knows "vsock:") are not for a local daemon.
	if name != "" && name[0] != '/' && name[0] != '@' {
		return "", fmt.Errorf("notify: NOTIFY_SOCKET=%q is neither an absolute path nor an abstract @name: %w",
			name, ErrBadEnvironment)
	}
	return name, nil
}

// checkFDName applies systemd's rule for descriptor names (fdname_is_valid),
// except that the empty name, which systemd allows, names nothing we could
// match.
func checkFDName(name string) error {
	if name == "" || len(name) > maxFDName {
		return ErrBadFDName
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c >= 0x7f || c == ':' {
			return ErrBadFDName
		}
	}
	return nil
}

// summary is the first line of a message, for errors.
func summary(state string) string {
	first, _, _ := strings.Cut(state, "\n")
	return strconv.Quote(first)
}
