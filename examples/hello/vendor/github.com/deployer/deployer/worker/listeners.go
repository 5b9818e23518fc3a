package worker

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// firstFD is where socket activation puts the first socket, after stdin,
// stdout and stderr.
const firstFD = 3

// Listeners returns the listening sockets passed by the daemon at fd 3, 4, …,
// in that order, following the systemd socket-activation protocol:
// LISTEN_FDS counts them, LISTEN_PID (when set) must be this process's pid,
// and LISTEN_FDNAMES (when set) names each one, colon-separated.
//
// Whatever the outcome, it unsets LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES,
// and the inherited descriptors become close-on-exec, so a program the app
// runs inherits neither. Each returned listener holds this process's own
// duplicate of the socket: closing it leaves the socket open and accepting
// for the other workers. A non-blocking socket, as the daemon passes it,
// stays non-blocking; nothing here switches it to blocking mode, which would
// switch it for every worker.
//
// Without LISTEN_FDS it returns an error wrapping [ErrNoSockets]; with a
// LISTEN_PID that is not this process, one wrapping [ErrNotOurSockets].
func Listeners() ([]net.Listener, error) {
	defer unsetListenEnv()

	nfds, names, err := parseListenEnv()
	if err != nil {
		return nil, err
	}
	lns := make([]net.Listener, 0, nfds)
	for i := range nfds {
		fd := firstFD + i
		ln, err := inheritListener(fd, names[i])
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			// Do not leave the remaining descriptors behind either.
			for j := fd + 1; j < firstFD+nfds; j++ {
				syscall.Close(j)
			}
			return nil, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// parseListenEnv checks LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES and
// returns the socket count and one name per socket ("" when unnamed). It
// touches no descriptor.
func parseListenEnv() (int, []string, error) {
	if s, ok := os.LookupEnv("LISTEN_PID"); ok {
		pid, err := strconv.Atoi(s)
		if err != nil {
			return 0, nil, fmt.Errorf("inherited sockets: bad LISTEN_PID %q", s)
		}
		if pid != os.Getpid() {
			return 0, nil, fmt.Errorf("%w: LISTEN_PID=%d but this is pid %d; "+
				"the process started by the daemon must exec the app "+
				"(end a start script with `exec ./app`)",
				ErrNotOurSockets, pid, os.Getpid())
		}
	}
	s, ok := os.LookupEnv("LISTEN_FDS")
	if !ok {
		return 0, nil, fmt.Errorf("%w: LISTEN_FDS not set; run under deployer", ErrNoSockets)
	}
	nfds, err := strconv.Atoi(s)
	if err != nil || nfds < 0 {
		return 0, nil, fmt.Errorf("inherited sockets: bad LISTEN_FDS %q", s)
	}
	if nfds == 0 {
		return 0, nil, fmt.Errorf("%w: LISTEN_FDS=0", ErrNoSockets)
	}
	names := make([]string, nfds)
	if s, ok := os.LookupEnv("LISTEN_FDNAMES"); ok {
		given := strings.Split(s, ":")
		if len(given) != nfds {
			return 0, nil, fmt.Errorf("inherited sockets: LISTEN_FDNAMES %q names %d sockets, LISTEN_FDS=%d",
				s, len(given), nfds)
		}
		names = given
	}
	return nfds, names, nil
}

// inheritListener turns inherited descriptor fd into a net.Listener holding
// a close-on-exec duplicate, and closes fd itself.
func inheritListener(fd int, name string) (net.Listener, error) {
	label := fmt.Sprintf("fd %d", fd)
	if name != "" {
		label = fmt.Sprintf("fd %d (%s)", fd, name)
	}
	syscall.CloseOnExec(fd)
	// os.NewFile leaves the descriptor's blocking mode alone, and so does
	// net.FileListener as long as nobody calls Fd on the *os.File: Fd would
	// switch the socket, shared with every other worker, to blocking mode.
	f := os.NewFile(uintptr(fd), label)
	if f == nil {
		return nil, fmt.Errorf("inherited socket %s: invalid descriptor", label)
	}
	defer f.Close() // FileListener holds its own duplicate.
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("inherited socket %s: %w", label, err)
	}
	return ln, nil
}

func unsetListenEnv() {
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
}
