package systemd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The activation tests play systemd: they open real sockets, start the test
// binary again with them at fd 3, 4, … and LISTEN_FDS, LISTEN_FDNAMES and
// LISTEN_PID set, as systemd execs a service, and the child
// (TestHelperProcess) reports what Listeners, Match and the conversions
// made of them.

const helperEnv = "DEPLOYER_SYSTEMD_HELPER" // scenario the child runs

// fdState is what the child saw of one descriptor.
type fdState struct {
	Open, CloseOnExec, NonBlocking bool
}

// inheritedReport is an Inherited as JSON.
type inheritedReport struct {
	Name, Network, Addr string
	FD                  int
	Listening           bool
}

// helperReport is what the child tells the parent.
type helperReport struct {
	Err            string             // from Listeners
	ListenEnvLeft  []string           // LISTEN_* variables still set after Listeners
	Before, After  map[int]fdState    // fd 3.. before and after Listeners
	Inherited      []inheritedReport  // what Listeners returned
	Found          map[string]int     // Match: want name → fd
	Unclaimed      []int              // Match: unclaimed fds
	Converted      map[string]string  // want name → what came through it, or the error
	AfterConverted map[int]fdState    // fd 3.. after the conversions
	WrongKind      string             // Listener on a datagram socket: the error
	WrongKindFD    fdState            // that descriptor afterwards
	SocketModes    map[string]fdState // want name → the converted socket's flags
}

// passed is one descriptor the parent passes, in fd order from 3.
type passed struct {
	name string
	file *os.File // a duplicate, closed once the child started
}

// dupFile duplicates fd into an *os.File for ExtraFiles. os.NewFile marks
// nothing to undo, so exec's call to Fd on it leaves the blocking mode alone.
func dupFile(t *testing.T, fd int, name string) *os.File {
	t.Helper()
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(nfd), name)
}

// runActivated starts the test binary with files at fd 3, 4, … and the
// activation variables, the scenario in helperEnv and extra env, and
// returns its report. LISTEN_PID is set by a shell that then execs the
// binary, so it names the child's own pid, as when systemd starts a
// service; with listenPID != "" it is set to that instead.
func runActivated(t *testing.T, scenario string, files []passed, listenPID string, env ...string) helperReport {
	t.Helper()
	names := make([]string, len(files))
	extra := make([]*os.File, len(files))
	for i, p := range files {
		names[i], extra[i] = p.name, p.file
	}
	report := filepath.Join(t.TempDir(), "report.json")
	var cmd *exec.Cmd
	args := []string{"-test.run=^TestHelperProcess$", "-test.count=1"}
	if listenPID == "" {
		script := `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`
		cmd = exec.Command("/bin/sh", append([]string{"-c", script, os.Args[0]}, args...)...)
	} else {
		cmd = exec.Command(os.Args[0], args...)
		env = append(env, "LISTEN_PID="+listenPID)
	}
	cmd.Env = append(ChildEnv(os.Environ()),
		helperEnv+"="+scenario, "HELPER_REPORT="+report,
		"LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = extra
	out, err := cmd.CombinedOutput()
	for _, f := range extra {
		f.Close()
	}
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("helper wrote no report: %v\n%s", err, out)
	}
	var r helperReport
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// blockingTCPListener opens a listening socket in blocking mode, as a
// socket unit may pass one, through the system calls.
func blockingTCPListener(t *testing.T) (int, string) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		t.Fatal(err)
	}
	return fd, sockname(t, fd)
}

func TestActivatedSocketsAreNamedMatchedAndConvertedWithoutTurningBlocking(t *testing.T) {
	dir := t.TempDir()
	// git-http: blocking, as systemd may pass it.
	gitFD, gitAddr := blockingTCPListener(t)
	// control: a Go listener (non-blocking), named.
	ctlPath := filepath.Join(dir, "deployer.sock")
	ctl, err := net.Listen("unix", ctlPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	// An app socket from an unnamed unit ("deployer.socket"): by address.
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	// The daemon's notify socket from the store, under another name: by path.
	notifyPath := filepath.Join(dir, "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	// A worker's output pipe from the store: not a socket.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if _, err := pw.WriteString("kept output"); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	// A socket nobody wants.
	stray, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stray.Close()

	files := []passed{
		{"git-http", dupFile(t, gitFD, "git-http")},
		{"control", dupFile(t, connFD(t, ctl.(syscall.Conn)), "control")},
		{"deployer.socket", dupFile(t, connFD(t, app.(syscall.Conn)), "app")},
		{"stored-notify", dupFile(t, connFD(t, notify), "notify")},
		{"output/hello/4242", dupFile(t, connFD(t, pr), "output")},
		{"deployer.socket", dupFile(t, connFD(t, stray.(syscall.Conn)), "stray")},
	}
	wants, _ := json.Marshal([]Want{
		{NameGitHTTP, "127.0.0.1:" + portOf(t, gitAddr)},
		{NameControl, ctlPath},
		{AppName("hello", 0), app.Addr().String()},
		{"notify", notifyPath},
		{"output/hello/4242", ""},
		{NameGitSSH, "127.0.0.1:2222"},
	})
	r := runActivated(t, "activation", files, "", "HELPER_WANTS="+string(wants))

	if r.Err != "" {
		t.Fatalf("Listeners: %s", r.Err)
	}
	if len(r.ListenEnvLeft) != 0 {
		t.Errorf("still set after Listeners: %v", r.ListenEnvLeft)
	}
	wantInherited := []inheritedReport{
		{Name: "git-http", FD: 3, Network: "tcp", Addr: gitAddr, Listening: true},
		{Name: "control", FD: 4, Network: "unix", Addr: ctlPath, Listening: true},
		{Name: "deployer.socket", FD: 5, Network: "tcp", Addr: app.Addr().String(), Listening: true},
		{Name: "stored-notify", FD: 6, Network: "unixgram", Addr: notifyPath},
		{Name: "output/hello/4242", FD: 7},
		{Name: "deployer.socket", FD: 8, Network: "tcp", Addr: stray.Addr().String(), Listening: true},
	}
	if !slices.Equal(r.Inherited, wantInherited) {
		t.Errorf("Listeners returned\n %+v\nwant\n %+v", r.Inherited, wantInherited)
	}
	for fd := 3; fd <= 8; fd++ {
		before, after := r.Before[fd], r.After[fd]
		if !before.Open || before.CloseOnExec {
			t.Errorf("fd %d before Listeners: %+v, want open and inheritable (the test passes it wrong)", fd, before)
		}
		if !after.Open || !after.CloseOnExec {
			t.Errorf("fd %d after Listeners: %+v, want open and close-on-exec", fd, after)
		}
		if before.NonBlocking != after.NonBlocking {
			t.Errorf("fd %d: Listeners changed its blocking mode (%v → %v)", fd, before.NonBlocking, after.NonBlocking)
		}
	}
	if r.Before[3].NonBlocking {
		t.Error("fd 3 was passed non-blocking: the test means to pass a blocking socket")
	}
	wantFound := map[string]int{"git-http": 3, "control": 4, "hello.0": 5, "notify": 6, "output/hello/4242": 7}
	if !mapsEqual(r.Found, wantFound) {
		t.Errorf("Match found %v, want %v", r.Found, wantFound)
	}
	if !slices.Equal(r.Unclaimed, []int{8}) {
		t.Errorf("Match left %v unclaimed, want [8]", r.Unclaimed)
	}
	wantConverted := map[string]string{
		"git-http": "echo over tcp", "control": "echo over unix", "hello.0": "echo over tcp",
		"notify": "datagram over unixgram", "output/hello/4242": "kept output",
	}
	for name, want := range wantConverted {
		if got := r.Converted[name]; got != want {
			t.Errorf("%s converted: %q, want %q", name, got, want)
		}
	}
	// Conversions leave no descriptor behind: each fd is closed (its
	// listener holds a duplicate), except the unclaimed one, still ours.
	for fd := 3; fd <= 7; fd++ {
		if r.AfterConverted[fd].Open {
			t.Errorf("fd %d still open after its conversion", fd)
		}
	}
	if !r.AfterConverted[8].Open {
		t.Error("the unclaimed fd 8 was closed")
	}
	for name, st := range r.SocketModes {
		if !st.NonBlocking || !st.CloseOnExec {
			t.Errorf("%s after conversion: %+v, want non-blocking (Go's poller) and close-on-exec", name, st)
		}
	}
	if len(r.SocketModes) != 4 {
		t.Errorf("socket modes reported for %d sockets, want 4", len(r.SocketModes))
	}
	if !strings.Contains(r.WrongKind, ErrWrongKind.Error()) || !r.WrongKindFD.Open {
		t.Errorf("Listener on a datagram socket: %q, fd afterwards %+v; want ErrWrongKind and the fd left open",
			r.WrongKind, r.WrongKindFD)
	}
	// The child shares these sockets: none of them may have turned blocking
	// for us.
	for name, c := range map[string]syscall.Conn{"control": ctl.(syscall.Conn), "app": app.(syscall.Conn), "notify": notify} {
		if !connNonBlocking(t, c) {
			t.Errorf("our %s socket turned blocking while the child used it", name)
		}
	}
}

func TestListenersIgnoresSocketsPassedToAnotherPid(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	files := []passed{{"git-http", dupFile(t, connFD(t, ln.(syscall.Conn)), "git-http")}}
	// Our own pid: the child's parent, as if a shell had not exec'd it.
	r := runActivated(t, "activation", files, strconv.Itoa(os.Getpid()))
	if r.Err != "" || len(r.Inherited) != 0 {
		t.Errorf("Listeners for another pid: %v, %q; want nothing and no error", r.Inherited, r.Err)
	}
	if len(r.ListenEnvLeft) != 0 {
		t.Errorf("still set after Listeners: %v", r.ListenEnvLeft)
	}
	if st := r.After[3]; !st.Open || st.CloseOnExec {
		t.Errorf("fd 3 after Listeners: %+v; want it left alone (open, inheritable)", st)
	}
}

// TestListenersRefusesMalformedVariablesWithoutTouchingDescriptors runs in
// this process: each case fails before any descriptor is looked at.
func TestListenersRefusesMalformedVariablesWithoutTouchingDescriptors(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		name           string
		pid, fds, fdns string // "-" = unset
		wantErr        bool
	}{
		{"nothing passed", "-", "-", "-", false},
		{"fds without pid", "-", "2", "a:b", false},
		{"pid without fds", self, "-", "-", false},
		{"zero fds", self, "0", "", false},
		{"another pid", strconv.Itoa(os.Getppid()), "2", "a:b", false},
		{"malformed pid", "me", "2", "a:b", true},
		{"malformed count", self, "two", "a:b", true},
		{"negative count", self, "-1", "-", true},
		{"names do not match the count", self, "2", "a:b:c", true},
		{"one name for two", self, "2", "a", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setOrUnset(t, "LISTEN_PID", tc.pid)
			setOrUnset(t, "LISTEN_FDS", tc.fds)
			setOrUnset(t, "LISTEN_FDNAMES", tc.fdns)
			got, err := Listeners()
			if (err != nil) != tc.wantErr || (err != nil && !errors.Is(err, ErrBadEnvironment)) {
				t.Errorf("Listeners() error %v, want error: %v (ErrBadEnvironment)", err, tc.wantErr)
			}
			if len(got) != 0 {
				t.Errorf("Listeners() = %v, want none", got)
			}
			for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
				if v, ok := os.LookupEnv(k); ok {
					t.Errorf("%s=%s still set", k, v)
				}
			}
		})
	}
}

// TestHelperProcess is the activated child of the tests above; it does
// nothing in a normal run.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return
	}
	r := helperReport{Converted: map[string]string{}, SocketModes: map[string]fdState{}}
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	r.Before = fdStates(n)
	inherited, err := Listeners()
	if err != nil {
		r.Err = err.Error()
	}
	r.After = fdStates(n)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") {
			r.ListenEnvLeft = append(r.ListenEnvLeft, kv)
		}
	}
	for _, in := range inherited {
		ir := inheritedReport{Name: in.Name, FD: in.FD, Network: in.Network, Listening: in.Listening}
		if in.Addr != nil {
			ir.Addr = in.Addr.String()
		}
		r.Inherited = append(r.Inherited, ir)
	}
	var wants []Want
	if s := os.Getenv("HELPER_WANTS"); s != "" {
		if err := json.Unmarshal([]byte(s), &wants); err != nil {
			panic(err)
		}
	}
	found, unclaimed := Match(inherited, wants)
	r.Found = map[string]int{}
	for name, in := range found {
		r.Found[name] = in.FD
	}
	for _, in := range unclaimed {
		r.Unclaimed = append(r.Unclaimed, in.FD)
	}
	if nf, ok := found["notify"]; ok {
		_, err := nf.Listener()
		r.WrongKind = fmt.Sprint(err)
		r.WrongKindFD = fdStateOf(nf.FD)
	}
	for name, in := range found {
		r.Converted[name] = convert(name, in, r.SocketModes)
	}
	r.AfterConverted = fdStates(n)
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	if err := os.WriteFile(os.Getenv("HELPER_REPORT"), b, 0o600); err != nil {
		panic(err)
	}
	os.Exit(0)
}

// convert turns in into what it is and proves it works: a listener accepts
// a connection and echoes, a datagram socket receives, a pipe is read. It
// records the converted socket's flags in modes.
func convert(name string, in Inherited, modes map[string]fdState) string {
	switch in.Network {
	case "tcp", "unix":
		ln, err := in.Listener()
		if err != nil {
			return "error: " + err.Error()
		}
		defer ln.Close()
		modes[name] = fdStateOf(connFDOf(ln.(syscall.Conn)))
		return echo(ln)
	case "unixgram":
		c, err := in.UnixConn()
		if err != nil {
			return "error: " + err.Error()
		}
		defer c.Close()
		modes[name] = fdStateOf(connFDOf(c))
		s, err := net.DialUnix("unixgram", nil, c.LocalAddr().(*net.UnixAddr))
		if err != nil {
			return "error: " + err.Error()
		}
		defer s.Close()
		if _, err := s.Write([]byte("datagram over unixgram")); err != nil {
			return "error: " + err.Error()
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil {
			return "error: " + err.Error()
		}
		return string(buf[:n])
	case "":
		f := in.File()
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			return "error: " + err.Error()
		}
		return string(b)
	}
	return "unexpected network " + in.Network
}

// echo dials ln, accepts that connection and sends a line through it.
func echo(ln net.Listener) string {
	c, err := net.DialTimeout(ln.Addr().Network(), ln.Addr().String(), 10*time.Second)
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	if tl, ok := ln.(interface{ SetDeadline(time.Time) error }); ok {
		tl.SetDeadline(time.Now().Add(10 * time.Second))
	}
	s, err := ln.Accept()
	if err != nil {
		return "error: " + err.Error()
	}
	defer s.Close()
	if _, err := fmt.Fprintf(s, "echo over %s", ln.Addr().Network()); err != nil {
		return "error: " + err.Error()
	}
	s.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return "error: " + err.Error()
	}
	return string(b)
}

func connFDOf(c syscall.Conn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	rc.Control(func(u uintptr) { fd = int(u) })
	return fd
}

func fdStates(n int) map[int]fdState {
	m := map[int]fdState{}
	for fd := firstFD; fd < firstFD+n; fd++ {
		m[fd] = fdStateOf(fd)
	}
	return m
}

func fdStateOf(fd int) fdState {
	fdfl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		return fdState{}
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return fdState{Open: true}
	}
	return fdState{Open: true, CloseOnExec: fdfl&unix.FD_CLOEXEC != 0, NonBlocking: fl&unix.O_NONBLOCK != 0}
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
