package worker_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/worker"
)

// helperEnv selects what TestHelperProcess does when the test binary is
// re-run as a worker process.
const helperEnv = "WORKER_TEST_HELPER"

// TestHelperProcess is not a test: it is the worker process the other tests
// start, by re-running the test binary, as os/exec's tests do.
func TestHelperProcess(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "":
		return
	case "listeners":
		helperListeners()
	case "serve":
		helperServe()
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// listenersReport is what the "listeners" helper prints as JSON.
type listenersReport struct {
	Err     string
	Addrs   []string
	Cloexec []bool
	Copies  []int    // descriptors in this process that refer to each socket
	EnvLeft []string // LISTEN_* variables still set afterwards
}

func helperListeners() {
	var rep listenersReport
	lns, err := worker.Listeners()
	if err != nil {
		rep.Err = err.Error()
	}
	for _, ln := range lns {
		rep.Addrs = append(rep.Addrs, ln.Addr().String())
		cloexec, target := describeFD(ln)
		rep.Cloexec = append(rep.Cloexec, cloexec)
		rep.Copies = append(rep.Copies, countFDs(target))
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") {
			rep.EnvLeft = append(rep.EnvLeft, kv)
		}
	}
	json.NewEncoder(os.Stdout).Encode(rep)
	os.Exit(0)
}

// describeFD reports whether ln's descriptor is close-on-exec and what it
// refers to ("socket:[inode]"), without calling Fd.
func describeFD(ln net.Listener) (cloexec bool, target string) {
	rc, err := ln.(syscall.Conn).SyscallConn()
	if err != nil {
		return false, err.Error()
	}
	rc.Control(func(fd uintptr) {
		flags, _, _ := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFD, 0)
		cloexec = flags&syscall.FD_CLOEXEC != 0
		target, _ = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	})
	return cloexec, target
}

// countFDs counts this process's descriptors that refer to target.
func countFDs(target string) int {
	ents, _ := os.ReadDir("/proc/self/fd")
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == target {
			n++
		}
	}
	return n
}

// helperServe is a worker: it answers every request with its
// DEPLOYER_WORKER name through worker.ServeAll.
func helperServe() {
	lns, err := worker.Listeners()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	name := os.Getenv("DEPLOYER_WORKER")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "worker %s: hi\n", name) // as the examples answer
	})}
	if err := worker.ServeAll(srv, lns); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// proc is a worker process started by a test, in its own process group.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{} // closed once the process is reaped
	err            error         // from Wait, valid after done
}

// withListenPID runs argv through a shell that sets LISTEN_PID to its own
// pid and then execs argv, which keeps that pid: the helper cannot know its
// pid before it starts.
func withListenPID(argv ...string) []string {
	return append([]string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`}, argv...)
}

// helperArgv is the command line that re-runs this test binary as a helper.
func helperArgv() []string {
	return []string{os.Args[0], "-test.run=^TestHelperProcess$"}
}

// startProc starts argv with files at fd 3, 4, … and LISTEN_FDS set, plus
// env, in dir ("" for the current one). The process is killed and reaped
// when the test ends.
func startProc(t *testing.T, dir string, argv []string, files []*os.File, env ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	p.cmd.Dir = dir
	p.cmd.ExtraFiles = files
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LISTEN_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") &&
			!strings.HasPrefix(kv, helperEnv+"=") && !strings.HasPrefix(kv, "GORACE=") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, fmt.Sprintf("LISTEN_FDS=%d", len(files)),
		// A -race binary otherwise sleeps a second on exit.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	p.cmd.Env = append(p.cmd.Env, env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
	return p
}

// startHelper starts the test binary as a helper worker in mode, with
// LISTEN_PID set to its pid.
func startHelper(t *testing.T, mode string, files []*os.File, env ...string) *proc {
	t.Helper()
	return startProc(t, "", withListenPID(helperArgv()...), files, append(env, helperEnv+"="+mode)...)
}

// signal sends sig to p's process group.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits up to timeout for p to exit and fails the test unless it
// exited with status 0.
func (p *proc) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%v still running after %v; stderr:\n%s", p.cmd.Args, timeout, &p.stderr)
	}
	if p.err != nil {
		t.Fatalf("%v: %v; stderr:\n%s", p.cmd.Args, p.err, &p.stderr)
	}
}

// listenTCP opens a loopback listener that only the workers accept on.
func listenTCP(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// inheritable returns a close-on-exec duplicate of ln's socket for
// exec.Cmd.ExtraFiles. It avoids (*net.TCPListener).File, whose *os.File
// switches the shared socket to blocking mode when exec calls Fd on it.
func inheritable(t *testing.T, ln syscall.Conn) *os.File {
	t.Helper()
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var dup uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		dup, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		t.Fatal(err)
	}
	if errno != 0 {
		t.Fatalf("dup: %v", errno)
	}
	f := os.NewFile(dup, "inherited")
	t.Cleanup(func() { f.Close() })
	return f
}

// notifySocket is a NOTIFY_SOCKET the test owns.
type notifySocket struct {
	conn *net.UnixConn
	name string
}

// listenNotify opens a datagram socket at a short path (socket paths are
// limited to 108 bytes, which t.TempDir can exceed) or, with abstract, at
// an abstract name.
func listenNotify(t *testing.T, abstract bool) *notifySocket {
	t.Helper()
	var name string
	if abstract {
		name = fmt.Sprintf("@deployer-worker-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	} else {
		dir, err := os.MkdirTemp("", "wn")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		name = dir + "/notify"
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifySocket{conn: conn, name: name}
}

// expect reads datagrams until one equals want, for up to timeout.
func (n *notifySocket) expect(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	n.conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 4096)
	var got []string
	for {
		k, err := n.conn.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %q on NOTIFY_SOCKET (got %q): %v", want, got, err)
		}
		if string(buf[:k]) == want {
			return
		}
		got = append(got, string(buf[:k]))
	}
}
