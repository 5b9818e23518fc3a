package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestHintFor(t *testing.T) {
	notFound := fmt.Errorf("%w: %w", ErrUnhealthy, &statusError{path: "/healthz", code: 404})
	cases := []struct {
		start  string
		err    error
		output []string
		own    []ownListener
		want   string // a part of the hint; "" for none
	}{
		{start: "gunicorn --bind fd://3 app:app", err: ErrUnhealthy, output: []string{"OSError: [Errno 9] Bad file descriptor"},
			want: "drop --bind fd://"},
		{start: "gunicorn -b fd://3 app:app", err: ErrUnhealthy, want: "drop --bind fd://"},
		{start: "node server.js", err: ErrUnhealthy, output: []string{"Error: listen EADDRINUSE: address already in use :::3000"},
			want: "tried to bind a port itself"},
		{start: "./run.sh", err: ErrUnhealthy, own: []ownListener{{pid: 42, comm: "gunicorn", addr: "127.0.0.1:8000", listenPID: "41"}},
			want: "LISTEN_PID is 41, not its own pid"},
		{start: "python3 app.py", err: ErrUnhealthy, own: []ownListener{{pid: 42, comm: "python3", addr: "0.0.0.0:5000", listenPID: "42"}},
			want: "python3 (pid 42) listens on 0.0.0.0:5000 itself"},
		{start: "x", err: notFound, want: "answers 404: the app has no such path"},
		{start: "x", err: &statusError{path: "/", code: 302, location: "/login"}, want: "redirects to /login (HTTP 302)"},
		{start: "x", err: &statusError{path: "/", code: 400}, want: "ALLOWED_HOSTS"},
		{start: "x", err: &statusError{path: "/", code: 503}},
		{start: "gunicorn app:app", err: ErrUnhealthy, output: []string{"sh: 1: gunicorn: not found"}, want: "was not found"},
		{start: "x", err: errors.New("no answer")},
	}
	for _, c := range cases {
		got := hintFor(c.start, c.err, c.output, c.own)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("hintFor(%q, %v, %q) = %q, want %q", c.start, c.err, c.output, got, c.want)
		}
	}
}

func TestDefiniteAnswers(t *testing.T) {
	for code, want := range map[int]bool{301: true, 302: true, 400: true, 401: true, 404: true, 408: false, 429: false, 500: false, 503: false} {
		if got := (&statusError{code: code}).definite(); got != want {
			t.Errorf("HTTP %d definite = %v, want %v", code, got, want)
		}
	}
}

func TestProcAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000:0050":                         "0.0.0.0:80",
		"00000000000000000000000001000000:0016": "[::1]:22",
	} {
		if got := procAddr(in); got != want {
			t.Errorf("procAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestOwnListenersSeesASocketTheGroupOpened: this test's own process
// group listens on a port it opened, which is found; the socket passed as
// inherited is not.
func TestOwnListenersSeesASocketTheGroupOpened(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	inherited, err := ListenSocket("127.0.0.1:0", "x", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer inherited.Close()
	own := ownListeners(os.Getpid(), []*Socket{inherited})
	var found bool
	for _, l := range own {
		if l.addr == ln.Addr().String() && l.pid == os.Getpid() {
			found = true
		}
		if l.addr == inherited.LocalAddr() {
			t.Errorf("the inherited socket counts as the group's own: %+v", l)
		}
	}
	if !found {
		t.Errorf("ownListeners = %+v, want %s of pid %d", own, ln.Addr(), os.Getpid())
	}
}

// TestInstanceHolds: this process holds the socket; a process whose
// descriptors cannot be read proves nothing.
func TestInstanceHolds(t *testing.T) {
	s, err := ListenSocket("127.0.0.1:0", "x", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if holds, known := instanceHolds(os.Getpid(), []*Socket{s}); !holds || !known {
		t.Fatalf("this process: holds %v known %v", holds, known)
	}
	other, err := ListenSocket("127.0.0.1:0", "y", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	// A child that inherited nothing holds neither.
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	if holds, known := instanceHolds(child.Process.Pid, []*Socket{other}); holds || !known {
		t.Fatalf("a child that inherited nothing: holds %v known %v", holds, known)
	}
	// A pid that does not exist cannot be read: unknown, not "holds none".
	if holds, known := instanceHolds(1<<30, []*Socket{other}); holds || known {
		t.Fatalf("no such pid: holds %v known %v", holds, known)
	}
}

// TestHintForAnAnswerComesFirst: an instance that answered the probe on
// the socket it inherited serves it, so a port of its own (a metrics or
// debug port) or an "address already in use" in its output is not why it
// failed: the answer is.
func TestHintForAnAnswerComesFirst(t *testing.T) {
	notFound := fmt.Errorf("%w: %w", ErrUnhealthy, &statusError{path: "/healthz", code: 404})
	metrics := []ownListener{{pid: 42, comm: "python3", addr: "127.0.0.1:9090", listenPID: "42"}}
	shell := []ownListener{{pid: 42, comm: "python3", addr: "127.0.0.1:9090", listenPID: "41"}}
	for _, c := range []struct {
		output []string
		own    []ownListener
	}{
		{own: metrics},
		{own: shell},
		{output: []string{"metrics: listen 127.0.0.1:9090: address already in use"}},
	} {
		if got := hintFor("python3 app.py", notFound, c.output, c.own); !strings.Contains(got, "answers 404") {
			t.Errorf("hintFor(404, %q, %+v) = %q, want the 404's hint", c.output, c.own, got)
		}
	}
}

// TestEnvironValueReadsLittleOfAHugeEnvironment: a process's environment
// is the app's to size (up to a quarter of its stack limit, which it may
// raise); the daemon reads LISTEN_PID from it without taking it whole
// into memory, and a huge value comes back cut.
func TestEnvironValueReadsLittleOfAHugeEnvironment(t *testing.T) {
	big := strings.Repeat("x", 100<<10) // under MAX_ARG_STRLEN (128 KiB)
	env := []string{"PATH=/usr/bin:/bin"}
	for i := range 8 {
		env = append(env, fmt.Sprintf("PAD%d=%s", i, big))
	}
	env = append(env, "LISTEN_PID="+big)
	child := exec.Command("sleep", "30")
	child.Env = env
	if err := child.Start(); err != nil {
		t.Skipf("cannot exec with a 0.9 MiB environment: %v", err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	// Start returns as execve closes descriptors, before the new
	// environment is laid out.
	waitUntil(t, "the child's environment", func() bool { return environValue(child.Process.Pid, "PATH") != "" })
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	v := environValue(child.Process.Pid, "LISTEN_PID")
	runtime.ReadMemStats(&after)
	if len(v) == 0 || len(v) > 256 || !strings.HasPrefix(v, "xxxx") {
		t.Errorf("LISTEN_PID of %d bytes read as %d bytes %.10q…", len(big), len(v), v)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 256<<10 {
		t.Errorf("reading LISTEN_PID from a 0.9 MiB environment allocated %d KiB", got>>10)
	}
}

// TestRedirectLocationIsCut: a redirect's Location is the app's to size
// (net/http takes up to 10 MiB of headers); it ends up in the failure's
// one-line reason, the ledger, DEPLOYER_ERROR (one variable over 128 KiB
// makes the on_failure hook's exec fail) and the hint, so it is cut.
func TestRedirectLocationIsCut(t *testing.T) {
	long := "/login?next=" + strings.Repeat("a", 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, long, http.StatusFound)
	}))
	defer srv.Close()
	err := Probe{HTTPPath: "/"}.Check(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
	var se *statusError
	if !errors.As(err, &se) || se.code != http.StatusFound {
		t.Fatalf("probe: %v", err)
	}
	if n := len(err.Error()); n > 1024 {
		t.Errorf("the reason is %d bytes", n)
	}
	if n := len(hintFor("x", err, nil, nil)); n > 1024 {
		t.Errorf("the hint is %d bytes", n)
	}
	if !strings.Contains(err.Error(), "/login?next=aaa") {
		t.Errorf("the reason does not start the Location: %.80s", err)
	}
}

// TestLivePIDIsNoneOnceTheProcessExited: once the preflight instance has
// exited its pid names nothing of the app's (a zombie for a moment, then
// possibly another process), so failed and the held check must not read
// /proc under it: another app's listeners would be named to this pusher,
// and a reused pid would "hold none" of the sockets.
func TestLivePIDIsNoneOnceTheProcessExited(t *testing.T) {
	ss := testSockets(t)
	spec := testSpec(t, ss, "sleep 30", 1)
	p := &Pool{spec: spec}
	w := newWorker(p.workerSpec(0, ss, false), nil, WorkerRecord{})
	defer func() { w.Kill(); <-w.Done() }()
	deadline := time.Now().Add(5 * time.Second)
	for w.livePID() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	pid := w.livePID()
	if pid == 0 || pid != w.Status().PID {
		t.Fatalf("running worker: livePID %d, status pid %d", pid, w.Status().PID)
	}
	w.Kill()
	<-w.Done()
	if got := w.livePID(); got != 0 {
		t.Errorf("exited worker: livePID %d", got)
	}
	// Its pid taken by another process (this one, started at another time).
	w.mu.Lock()
	w.status.PID = os.Getpid()
	w.mu.Unlock()
	if got := w.livePID(); got != 0 {
		t.Errorf("pid reused by pid %d: livePID %d", os.Getpid(), got)
	}
}

// TestInstanceHoldsASocketAGrandchildKeptAfterItsParentLeft: a launcher
// that starts its server through a child that exits (a double fork) and
// then closes its own copy leaves the server reparented, out of the
// instance's tree but still in its process group, holding fd 3: the
// instance has not let go of the socket, and preflight must not fail it
// with "closed the socket it inherited" while the server boots.
func TestInstanceHoldsASocketAGrandchildKeptAfterItsParentLeft(t *testing.T) {
	s, err := ListenSocket("127.0.0.1:0", "x", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fd, err := s.FD()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command("sh", "-c", `sh -c 'sleep 30 & exit 0'; exec 3>&-; echo closed; exec sleep 30`)
	dup, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(dup), "socket")
	defer f.Close()
	child.ExtraFiles = []*os.File{f}
	child.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { syscall.Kill(-child.Process.Pid, syscall.SIGKILL); child.Wait() }()
	line := make([]byte, 7)
	if _, err := io.ReadFull(out, line); err != nil {
		t.Fatal(err)
	}
	if holds, known := instanceHolds(child.Process.Pid, []*Socket{s}); !holds || !known {
		t.Fatalf("the server in the instance's group holds it: holds %v known %v", holds, known)
	}
}
