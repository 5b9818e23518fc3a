package supervisor

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// PreflightError is a failed preflight: the reason, what to change when
// the cause is one deployer recognises, and the last lines the instance
// printed. Error is the reason alone, on one line.
type PreflightError struct {
	Err error
	// Hint says in one line what to change; "" when the cause is not
	// recognised.
	Hint string
	// Output is the instance's last lines of output, oldest first.
	Output []string
}

func (e *PreflightError) Error() string { return e.Err.Error() }
func (e *PreflightError) Unwrap() error { return e.Err }

// ownListener is a TCP socket a process of an instance listens on that it
// did not inherit from the daemon.
type ownListener struct {
	pid       int
	comm      string
	addr      string
	listenPID string // the process's LISTEN_PID, "" if it has none
}

// hintFor recognises why a preflight failed, from the start command, the
// failure, the instance's output and the sockets its processes opened
// themselves, and says what to change; "" when nothing is recognised.
func hintFor(start string, err error, output []string, own []ownListener) string {
	out := strings.ToLower(strings.Join(output, "\n"))
	gunicornFD := regexp.MustCompile(`(^|\s)(-b|--bind)[ =]?['"]?fd://`)
	if strings.Contains(start, "gunicorn") && gunicornFD.MatchString(start) {
		return "gunicorn takes the inherited socket from LISTEN_FDS by itself: drop --bind fd://… from start (docs/recipes/gunicorn-flask.md)"
	}
	// An answer came from the socket the instance inherited, so it serves
	// it: a port of its own (metrics, a debugger) or a bind that failed is
	// not why it failed, the answer is.
	if h := answerHint(err); h != "" {
		return h
	}
	switch {
	case len(own) > 0 && own[0].listenPID != "" && own[0].listenPID != strconv.Itoa(own[0].pid):
		l := own[0]
		return fmt.Sprintf("%s (pid %d) ignored the inherited socket because LISTEN_PID is %s, not its own pid, and listens on %s itself: "+
			"start it with exec (e.g. \"exec %s …\" as the last line of your start script) so it runs as the process the daemon started",
			l.comm, l.pid, l.listenPID, l.addr, l.comm)
	case len(own) > 0:
		return fmt.Sprintf("%s (pid %d) listens on %s itself: it must serve the socket it inherits as fd 3 (LISTEN_FDS=1) instead of binding a port; see docs/worker-protocol.md",
			own[0].comm, own[0].pid, own[0].addr)
	case strings.Contains(out, "address already in use") || strings.Contains(out, "eaddrinuse"):
		return "the app tried to bind a port itself: it must serve the socket it inherits as fd 3 (LISTEN_FDS=1) instead; there is no PORT (docs/worker-protocol.md)"
	case strings.Contains(out, ": not found") || strings.Contains(out, "command not found"):
		return "the start command was not found: is it installed, on the PATH of the app's user, or built by build?"
	}
	return ""
}

// answerHint says what to change when the probe got an HTTP answer that
// says the path is wrong; "" otherwise.
func answerHint(err error) string {
	var se *statusError
	if !errors.As(err, &se) {
		return ""
	}
	switch {
	case se.code >= 300 && se.code < 400:
		to := ""
		if se.location != "" {
			to = " to " + se.location
		}
		return fmt.Sprintf("GET %s redirects%s (HTTP %d), and the probe does not follow redirects: set health.http to a path that answers 2xx itself", se.path, to, se.code)
	case se.code == 404 || se.code == 410:
		return fmt.Sprintf("GET %s answers %d: the app has no such path; set health.http to one it serves with 2xx (or health.tcp: true)", se.path, se.code)
	case se.code >= 400 && se.code < 500:
		return fmt.Sprintf("GET %s answers %d: set health.http to a path that answers 2xx without credentials (ALLOWED_HOSTS and the like must accept the probe's Host: 127.0.0.1)", se.path, se.code)
	}
	return ""
}

// statusError is an HTTP probe's answer that is not 2xx.
type statusError struct {
	path     string
	code     int
	location string // a redirect's Location
}

func (e *statusError) Error() string {
	if e.location != "" {
		return fmt.Sprintf("GET %s: HTTP %d (redirect to %s, not followed)", e.path, e.code, e.location)
	}
	return fmt.Sprintf("GET %s: HTTP %d", e.path, e.code)
}

// definite reports whether an answer says for sure that the path is not a
// health check, so that probing it again is pointless: a redirect or a
// client error other than those that may pass (timeout, too early, too
// many requests).
func (e *statusError) definite() bool {
	switch e.code {
	case 408, 425, 429:
		return false
	}
	return e.code >= 300 && e.code < 500
}

// ownListeners finds the TCP sockets process pid and those below it listen
// on and did not inherit: inherited are the daemon's sockets the instance
// got. Best effort: what /proc does not show is left out.
func ownListeners(pid int, inherited []*Socket) []ownListener {
	listening := map[uint64]string{} // inode -> address
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		readListening(f, listening)
	}
	for _, s := range inherited {
		if ino, err := s.inode(); err == nil {
			delete(listening, ino)
		}
	}
	if len(listening) == 0 {
		return nil
	}
	var out []ownListener
	for _, pid := range descendants(pid) {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
			if err != nil {
				continue
			}
			if addr, ok := listening[ino]; ok {
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
				out = append(out, ownListener{pid: pid, comm: strings.TrimSpace(string(comm)), addr: addr,
					listenPID: environValue(pid, "LISTEN_PID")})
			}
		}
	}
	return out
}

// instanceHolds reports whether the process pid or one of the instance's
// other processes holds a descriptor of one of the sockets; known is false
// when that could not be told, for one process whose descriptors could not
// be read (a daemon without CAP_SYS_PTRACE looking at another user's
// process) makes "none holds it" unprovable. The processes are those below
// pid and, before concluding that none holds it, those of its process
// group: a server started through a child that exited (a double fork) is
// no longer below pid.
func instanceHolds(pid int, sockets []*Socket) (holds, known bool) {
	want := map[string]bool{}
	for _, s := range sockets {
		ino, err := s.inode()
		if err != nil {
			return false, false
		}
		want["socket:["+strconv.FormatUint(ino, 10)+"]"] = true
	}
	holds, known = anyHolds(descendants(pid), want)
	if holds || !known {
		return holds, known
	}
	return anyHolds(groupMembers(pid), want)
}

// anyHolds reports whether one of pids holds a descriptor named in want;
// known is false when one's descriptors could not be read.
func anyHolds(pids []int, want map[string]bool) (holds, known bool) {
	for _, p := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", p)
		fds, err := os.ReadDir(dir)
		if err != nil {
			return false, false
		}
		for _, fd := range fds {
			if link, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && want[link] {
				return true, true
			}
		}
	}
	return false, true
}

// groupMembers are the processes of process group pgid, as /proc shows
// them now; one that exits meanwhile is left out.
func groupMembers(pgid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, err := statFields(pid); err == nil && f[2] == strconv.Itoa(pgid) { // field 5, pgrp
			out = append(out, pid)
		}
	}
	return out
}

// readListening adds the listening sockets of a /proc/net/tcp{,6} table.
func readListening(path string, into map[uint64]string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" { // TCP_LISTEN
			continue
		}
		ino, err := strconv.ParseUint(fields[9], 10, 64)
		if err != nil || ino == 0 {
			continue
		}
		into[ino] = procAddr(fields[1])
	}
}

// procAddr turns /proc/net/tcp's "0100007F:1F90" into "127.0.0.1:8080".
func procAddr(s string) string {
	host, port, ok := strings.Cut(s, ":")
	b, err := hex.DecodeString(host)
	p, perr := strconv.ParseUint(port, 16, 16)
	if !ok || err != nil || perr != nil || (len(b) != 4 && len(b) != 16) {
		return s
	}
	// The kernel prints each 32-bit word in host (little-endian) order.
	for i := 0; i+4 <= len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return net.JoinHostPort(net.IP(b).String(), strconv.FormatUint(p, 10))
}

// environValue reads one variable of a process's environment as exec'd.
// The environment is the app's to size (a quarter of a stack limit it may
// raise): it is read an entry at a time and only its first environMax
// bytes, never whole, and the value comes back cut at valueMax.
func environValue(pid int, key string) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return ""
	}
	defer f.Close()
	r := bufio.NewReaderSize(io.LimitReader(f, environMax), 4096)
	for {
		entry, err := r.ReadSlice(0)
		if v, ok := bytes.CutPrefix(entry, []byte(key+"=")); ok {
			return cut(string(bytes.TrimSuffix(v, []byte{0})), valueMax)
		}
		for errors.Is(err, bufio.ErrBufferFull) { // the rest of a long entry
			_, err = r.ReadSlice(0)
		}
		if err != nil {
			return ""
		}
	}
}

// environMax bounds how much of a process's environment is read, and
// valueMax a value taken from it: LISTEN_PID is a pid.
const (
	environMax = 1 << 20
	valueMax   = 32
)

// cut returns s cut at n bytes, marked with "…".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
