package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
	app "github.com/deployer/deployer/worker"
	"golang.org/x/sys/unix"
)

// TestHelperWorker is not a test: it is the worker the other tests start,
// by re-running the test binary. It serves HTTP on its inherited fd 3.
func TestHelperWorker(t *testing.T) {
	if os.Getenv("SUPERVISOR_HELPER") != "1" {
		t.Skip("helper process")
	}
	f := os.NewFile(3, "listen")
	ln, err := net.FileListener(f)
	if err != nil {
		fmt.Println("no socket:", err)
		os.Exit(3)
	}
	f.Close() // the listener holds its own copy, closed on the stop signal
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if os.Getenv("HELPER_CLOSE") != "" {
			w.Header().Set("Connection", "close") // one answer per connection
		}
		if r.URL.Path == "/healthz" && os.Getenv("HELPER_HEALTH") != "" {
			code, _ := strconv.Atoi(os.Getenv("HELPER_HEALTH"))
			w.WriteHeader(code)
		}
		if path := os.Getenv("HELPER_WARM_LOG"); path != "" && r.UserAgent() == WarmUserAgent {
			// One line per warm-up request this process answered.
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err == nil {
				fmt.Fprintf(f, "%s %d\n", os.Getenv("DEPLOYER_RELEASE"), os.Getpid())
				f.Close()
			}
		}
		if d, err := time.ParseDuration(os.Getenv("HELPER_BURN")); err == nil {
			// CPU per request, as a cold worker spends it.
			for t0 := time.Now(); time.Since(t0) < d; {
			}
		}
		fmt.Fprintf(w, "%s %s %d", os.Getenv("DEPLOYER_RELEASE"), os.Getenv("DEPLOYER_WORKER"), os.Getpid())
	})}
	go srv.Serve(ln)
	if d, err := time.ParseDuration(os.Getenv("HELPER_READY_AFTER")); err == nil {
		time.Sleep(d) // the test's worker is slow to become ready
		if err := app.Ready(); err != nil {
			fmt.Println("notify:", err)
			os.Exit(4)
		}
	}
	sig := make(chan os.Signal, 1)
	signalNotify(sig)
	<-sig
	ln.Close()
	srv.Shutdown(context.Background())
	os.Exit(0)
}

// syncBuffer collects worker output for assertions.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testSockets(t *testing.T) []*Socket {
	t.Helper()
	ss, err := ListenSockets("t", []string{"127.0.0.1:0"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { CloseSockets(ss) })
	return ss
}

func testSpec(t *testing.T, ss []*Socket, start string, workers int) PoolSpec {
	return PoolSpec{
		App: "t", Release: "v1", Revision: "abc", Dir: t.TempDir(), Start: start, Workers: workers,
		Env: map[string]string{"SUPERVISOR_HELPER": "1"}, Sockets: ss,
		MinUptime: 100 * time.Millisecond, StopSignal: syscall.SIGTERM, DrainTimeout: 5 * time.Second,
		Log: &syncBuffer{},
	}
}

func helperStart(t *testing.T) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s -test.run='^TestHelperWorker$'", exe)
}

func startPool(t *testing.T, spec PoolSpec) *Pool {
	t.Helper()
	p, err := StartPool(context.Background(), spec, 10*time.Second)
	if err != nil {
		t.Fatalf("StartPool: %v\noutput:\n%s", err, spec.Log)
	}
	t.Cleanup(p.Stop)
	return p
}

func nonBlocking(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			if err != nil {
				t.Fatal(err)
			}
			return flags&unix.O_NONBLOCK != 0
		}
	}
	t.Fatalf("no flags in %s", path)
	return false
}

// TestStartingWorkersKeepsSharedSocketNonBlocking: a running worker's
// inherited socket must stay non-blocking while the daemon starts more
// workers on it (golang/go#43894). The first half proves the check can fail:
// the naive os/exec way of passing the socket flips it to blocking.
func TestStartingWorkersKeepsSharedSocketNonBlocking(t *testing.T) {
	ss := testSockets(t)
	fd, err := ss[0].FD()
	if err != nil {
		t.Fatal(err)
	}
	self := fmt.Sprintf("/proc/self/fdinfo/%d", fd)
	if !nonBlocking(t, self) {
		t.Fatal("a new socket should be non-blocking")
	}

	// The check detects the bug: exec.Cmd.ExtraFiles calls Fd().
	f, err := ss[0].ln.File()
	if err != nil {
		t.Fatal(err)
	}
	naive := exec.Command("true")
	naive.ExtraFiles = []*os.File{f}
	if err := naive.Run(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if nonBlocking(t, self) {
		t.Fatal("expected os/exec to make the socket blocking; the check below would prove nothing")
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}

	first := startPool(t, testSpec(t, ss, "sleep 60", 1))
	firstPID := first.Status()[0].PID
	more := startPool(t, testSpec(t, ss, "sleep 60", 3))
	_ = more
	if !nonBlocking(t, fmt.Sprintf("/proc/%d/fdinfo/3", firstPID)) {
		t.Fatal("the running worker's socket became blocking when other workers started")
	}
	if !nonBlocking(t, self) {
		t.Fatal("the daemon's socket became blocking")
	}
}

// TestWorkerGetsOnlyItsDescriptorsAndProtocolEnv checks fd 0-3 and nothing
// else, LISTEN_PID = the worker's pid, and none of the daemon's own
// activation or notify variables.
func TestWorkerGetsOnlyItsDescriptorsAndProtocolEnv(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/daemon/own")
	t.Setenv("LISTEN_FDNAMES", "daemon-own")
	leak, err := os.Open(os.DevNull) // an fd the daemon holds
	if err != nil {
		t.Fatal(err)
	}
	defer leak.Close()
	ss := testSockets(t)
	spec := testSpec(t, ss, "sleep 60", 1)
	spec.Env["GREETING"] = "hi"
	p := startPool(t, spec)
	pid := p.Status()[0].PID
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range fds {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "0,1,2,3" {
		t.Fatalf("worker fds = %v, want 0,1,2,3", names)
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(raw), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	want := map[string]string{
		"LISTEN_FDS": "1", "LISTEN_PID": strconv.Itoa(pid), "LISTEN_FDNAMES": "t-0",
		"DEPLOYER_APP": "t", "DEPLOYER_RELEASE": "v1", "DEPLOYER_REVISION": "abc", "DEPLOYER_WORKER": "0",
		"GREETING": "hi", "DEPLOYER_LISTEN_0": ss[0].LocalAddr(),
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	if _, ok := env["NOTIFY_SOCKET"]; ok {
		t.Error("the daemon's NOTIFY_SOCKET leaked into the worker")
	}
}

// TestConnectionsOfTheAppSocketHaveNoDelay: the daemon's sockets set
// TCP_NODELAY, and a connection accepted from one has it without the
// server setting it, as with systemd's NoDelay=yes.
func TestConnectionsOfTheAppSocketHaveNoDelay(t *testing.T) {
	s, err := ListenSocket("127.0.0.1:0", "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := net.Dial("tcp", s.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var nfd int
	if err := s.Control(func(fd int) { nfd, _, err = unix.Accept(fd) }); err != nil || nfd <= 0 {
		t.Fatalf("accept: %v", err)
	}
	defer unix.Close(nfd)
	if v, err := unix.GetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
		t.Fatalf("TCP_NODELAY on an accepted connection = %d, %v; want on", v, err)
	}
}

// TestDeferAcceptHoldsAConnectionUntilItsRequestArrives: with the option
// a connection that has sent nothing is not handed to accept, so no
// worker can hold it (and close it as idle when it stops); once its first
// bytes arrive it is, with them readable. Turned off, accept takes it at
// once.
func TestDeferAcceptHoldsAConnectionUntilItsRequestArrives(t *testing.T) {
	s, err := ListenSocket("127.0.0.1:0", "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	accept := func() (int, error) {
		nfd := -1
		cerr := s.Control(func(fd int) { nfd, _, err = unix.Accept4(fd, unix.SOCK_CLOEXEC) })
		if cerr != nil {
			return -1, cerr
		}
		return nfd, err
	}
	acceptWithin := func(what string) int {
		t.Helper()
		var nfd int
		testutil.WaitFor(t, 10*time.Second, what, func() bool {
			var err error
			nfd, err = accept()
			return err == nil
		})
		return nfd
	}

	if err := s.SetDeferAccept(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", s.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if nfd, err := accept(); !errors.Is(err, unix.EAGAIN) {
		unix.Close(nfd)
		t.Fatalf("accept of a connection that sent nothing = %d, %v; want EAGAIN", nfd, err)
	}
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	nfd := acceptWithin("the connection to be accepted once its request arrived")
	defer unix.Close(nfd)
	buf := make([]byte, 64)
	if n, err := unix.Read(nfd, buf); err != nil || !strings.HasPrefix(string(buf[:n]), "GET /") {
		t.Fatalf("the accepted connection's first read = %q, %v; want its request", buf[:max(n, 0)], err)
	}

	if err := s.SetDeferAccept(0); err != nil {
		t.Fatal(err)
	}
	c2, err := net.Dial("tcp", s.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	unix.Close(acceptWithin("a silent connection to be accepted with the option off"))
}

func get(t *testing.T, addr string) (string, error) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestPoolServesOnTheSharedSocketAndSwaps(t *testing.T) {
	ss := testSockets(t)
	blue := startPool(t, testSpec(t, ss, helperStart(t), 2))
	body, err := get(t, ss[0].LocalAddr())
	if err != nil || !strings.HasPrefix(body, "v1 ") {
		t.Fatalf("blue answered %q, %v", body, err)
	}
	spec := testSpec(t, ss, helperStart(t), 2)
	spec.Release = "v2"
	green := startPool(t, spec)
	blue.Stop()
	for i := 0; i < 20; i++ {
		body, err := get(t, ss[0].LocalAddr())
		if err != nil || !strings.HasPrefix(body, "v2 ") {
			t.Fatalf("after the swap got %q, %v", body, err)
		}
	}
	_ = green
}

func TestPoolThatCrashesAtStartFailsAndLeavesNothing(t *testing.T) {
	ss := testSockets(t)
	spec := testSpec(t, ss, "echo cannot bind port; exit 4", 2)
	_, err := StartPool(context.Background(), spec, 10*time.Second)
	if !errors.Is(err, ErrNotUp) || !strings.Contains(err.Error(), "cannot bind port") {
		t.Fatalf("err = %v, want ErrNotUp with the worker's output", err)
	}
}

// groupAlive reports whether any process is in process group pgid.
func groupAlive(pgid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			return true
		}
	}
	return false
}

// TestStopKillsWorkersThatIgnoreTheSignalAndTheirChildren: a worker that
// ignores SIGTERM is killed after drain_timeout, with its background child.
func TestStopKillsWorkersThatIgnoreTheSignalAndTheirChildren(t *testing.T) {
	ss := testSockets(t)
	spec := testSpec(t, ss, "trap '' TERM; sleep 120 & sleep 120", 1)
	spec.DrainTimeout = 300 * time.Millisecond
	p, err := StartPool(context.Background(), spec, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pid := p.Status()[0].PID
	if !groupAlive(pid) {
		t.Fatal("worker group not running")
	}
	p.Stop()
	if groupAlive(pid) {
		t.Fatal("worker or its child outlived Stop")
	}
	if st := p.Status()[0].State; st != Stopped {
		t.Fatalf("state = %s", st)
	}
	if !strings.Contains(spec.Log.(*syncBuffer).String(), "SIGKILL") {
		t.Fatalf("log does not say it was killed:\n%s", spec.Log)
	}
}

func TestCrashedWorkerIsRestarted(t *testing.T) {
	ss := testSockets(t)
	flag := filepath.Join(t.TempDir(), "crashed")
	// The first run crashes after it was up; later runs stay up.
	spec := testSpec(t, ss, fmt.Sprintf("if [ -e %s ]; then exec sleep 60; else touch %s; sleep 0.3; exit 9; fi", flag, flag), 1)
	p := startPool(t, spec)
	first := p.Status()[0].PID
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := p.Status()[0]
		if st.Restarts == 1 && st.State == Running && st.PID != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not restarted: %+v\n%s", st, spec.Log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClosedSocketIsNeverPassedOn(t *testing.T) {
	ss := testSockets(t)
	ss[0].Close()
	if _, err := StartPool(context.Background(), testSpec(t, ss, "sleep 60", 1), 5*time.Second); !errors.Is(err, ErrSocketClosed) {
		t.Fatalf("err = %v, want ErrSocketClosed", err)
	}
}

func TestBackoffGrowsAndCaps(t *testing.T) {
	if backoff(0) != time.Second || backoff(1) != 1500*time.Millisecond || backoff(20) != 30*time.Second {
		t.Fatalf("backoff: %v %v %v", backoff(0), backoff(1), backoff(20))
	}
}

func TestPreflightUsesAPrivateSocket(t *testing.T) {
	ss := testSockets(t)
	spec := testSpec(t, ss, helperStart(t), 1)
	if err := preflightErr(context.Background(), spec, Probe{HTTPPath: "/healthz", Timeout: 10 * time.Second}); err != nil {
		t.Fatalf("healthy release failed preflight: %v\n%s", err, spec.Log)
	}
	// Nothing is accepting on the live socket: the preflight worker never saw it.
	c, err := net.DialTimeout("tcp", ss[0].LocalAddr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
	if n, _ := c.Read(make([]byte, 10)); n != 0 {
		t.Fatal("something answered on the live socket during preflight")
	}
	c.Close()

	spec.Env["HELPER_HEALTH"] = "503"
	err = preflightErr(context.Background(), spec, Probe{HTTPPath: "/healthz", Timeout: 2 * time.Second})
	if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), "HTTP 503") {
		t.Fatalf("err = %v, want ErrUnhealthy naming HTTP 503\n%s", err, spec.Log)
	}
	spec.Start = "echo listen tcp :8080: bind: address already in use; exit 1"
	err = preflightErr(context.Background(), spec, Probe{HTTPPath: "/healthz", Timeout: 10 * time.Second})
	var pe *PreflightError
	if !errors.Is(err, ErrUnhealthy) || !errors.As(err, &pe) || len(pe.Output) != 1 ||
		!strings.Contains(pe.Output[0], "address already in use") || !strings.Contains(pe.Hint, "tried to bind a port itself") {
		t.Fatalf("err = %v (%#v), want ErrUnhealthy with the worker's output and a hint", err, pe)
	}
}

func testNotifier(t *testing.T) *Notifier {
	t.Helper()
	n, err := ListenNotify(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestNotifyWorkerIsNotUpBeforeReady: with notify on, a worker that sends
// READY=1 late is not counted as up before it, however long min_uptime is
// past; one that never sends it never comes up.
func TestNotifyWorkerIsNotUpBeforeReady(t *testing.T) {
	ss := testSockets(t)
	spec := testSpec(t, ss, helperStart(t), 2)
	spec.Notify = testNotifier(t)
	spec.Env["HELPER_READY_AFTER"] = "1500ms"
	start := time.Now()
	p := startPool(t, spec)
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Fatalf("pool up after %s, before the workers sent READY=1", took)
	}
	for _, w := range p.Status() {
		if w.State != Running {
			t.Fatalf("worker %+v", w)
		}
	}

	spec = testSpec(t, ss, "exec sleep 60", 1) // never sends READY=1
	spec.Notify = testNotifier(t)
	if _, err := StartPool(context.Background(), spec, 2*time.Second); !errors.Is(err, ErrNotUp) {
		t.Fatalf("a worker that never sent READY=1 came up: %v", err)
	}
}

// TestNotifyIgnoresOtherSenders: READY=1 from a process that is not the
// worker (here the shell's child, not exec'd) does not count.
func TestNotifyIgnoresOtherSenders(t *testing.T) {
	ss := testSockets(t)
	spec := testSpec(t, ss, "python3 -c 'import os,socket; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b\"READY=1\", os.environ[\"NOTIFY_SOCKET\"])'; sleep 60", 1)
	spec.Notify = testNotifier(t)
	if _, err := StartPool(context.Background(), spec, 2*time.Second); !errors.Is(err, ErrNotUp) {
		t.Fatalf("READY=1 from another pid was accepted: %v", err)
	}
}

func TestTCPProbeNeedsTheWorkerToAccept(t *testing.T) {
	ss := testSockets(t)
	spec := testSpec(t, ss, "exec sleep 60", 1) // holds the socket, never accepts
	err := preflightErr(context.Background(), spec, Probe{TCP: true, Timeout: time.Second})
	if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), "no worker accepted") {
		t.Fatalf("err = %v, want unhealthy: not accepted", err)
	}
	spec.Start = helperStart(t)
	if err := preflightErr(context.Background(), spec, Probe{TCP: true, Timeout: 10 * time.Second}); err != nil {
		t.Fatalf("accepting worker failed the TCP probe: %v", err)
	}
}

// TestCommandProbe: a command that exits 0 passes preflight; one that fails
// makes the release unhealthy, and the error carries the command's own
// output even though the deadline always lands on a later run still going:
// only the first run finishes, every later one blocks until it is killed.
func TestCommandProbe(t *testing.T) {
	ss := testSockets(t)
	spec := testSpec(t, ss, helperStart(t), 1)
	ok := Probe{Command: `curl -fsS "http://$DEPLOYER_HEALTH_ADDR/" >/dev/null`, Timeout: 10 * time.Second}
	if err := preflightErr(context.Background(), spec, ok); err != nil {
		t.Fatalf("healthy command failed: %v", err)
	}
	bad := Probe{
		Command: "if [ -e ran ]; then exec sleep 60; fi; touch ran; echo not ready; exit 1",
		Dir:     t.TempDir(),
		Timeout: 2 * time.Second, // only the first run, a shell echo, has to fit in it
	}
	err := preflightErr(context.Background(), spec, bad)
	if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), "not ready") || strings.Contains(err.Error(), "killed") {
		t.Fatalf("err = %v, want unhealthy with the command's output, not the kill of the run the deadline cut", err)
	}
}

// preflightErr is Preflight's verdict alone.
func preflightErr(ctx context.Context, spec PoolSpec, probe Probe) error {
	_, err := Preflight(ctx, spec, probe)
	return err
}
