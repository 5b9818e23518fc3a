package worker_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/worker"
)

// get sends one keep-alive GET on conn and reads the whole response.
func get(t *testing.T, conn net.Conn, br *bufio.Reader, path string) (*http.Response, string) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp, string(body)
}

// serveInProcess runs worker.Serve in the test process, stopped by SIGUSR1
// (SIGTERM would stop the test binary if it came early), and waits for
// READY=1. Serve's result arrives on the returned channel.
func serveInProcess(t *testing.T, h http.Handler, opts ...worker.Option) (net.Listener, *notifySocket, <-chan error) {
	t.Helper()
	ns := listenNotify(t, false)
	t.Setenv("NOTIFY_SOCKET", ns.name)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	done := make(chan error, 1)
	opts = append([]worker.Option{worker.WithSignals(syscall.SIGUSR1)}, opts...)
	go func() { done <- worker.Serve(srv, ln, opts...) }()
	t.Cleanup(func() { srv.Close() })
	ns.expect(t, "READY=1", 10*time.Second)
	return ln, ns, done
}

func TestServeAsksKeepAliveClientsToCloseOnceDraining(t *testing.T) {
	ln, ns, done := serveInProcess(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hi\n")
	}), worker.WithGrace(time.Minute))

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	if resp, _ := get(t, conn, br, "/"); resp.Close {
		t.Fatal("before the drain: response asks to close the connection")
	}

	syscall.Kill(syscall.Getpid(), syscall.SIGUSR1)
	ns.expect(t, "STOPPING=1", 10*time.Second)
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("draining server still accepts new connections")
	}
	resp, _ := get(t, conn, br, "/")
	if !resp.Close { // ReadResponse turns "Connection: close" into Close
		t.Fatalf("draining: response header %v, want Connection: close", resp.Header)
	}
	if n, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after Connection: close the server kept the connection open (%v, %v)", n, err)
	}
	// The only connection is gone, so the one-minute grace ends at once.
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil after a drain", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return although no connection was left")
	}
}

func TestServeWaitsForInFlightRequests(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	ln, ns, done := serveInProcess(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "slow\n")
	}), worker.WithGrace(0))

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
	<-entered
	syscall.Kill(syscall.Getpid(), syscall.SIGUSR1)
	ns.expect(t, "STOPPING=1", 10*time.Second)
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight request lost: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "slow\n" {
		t.Fatalf("in-flight request answered %q", body)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
}

func TestServeStopsAtASecondSignal(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	ln, ns, done := serveInProcess(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	}), worker.WithGrace(0))

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /stuck HTTP/1.1\r\nHost: test\r\n\r\n")
	<-entered
	syscall.Kill(syscall.Getpid(), syscall.SIGUSR1)
	ns.expect(t, "STOPPING=1", 10*time.Second)
	syscall.Kill(syscall.Getpid(), syscall.SIGUSR1)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "second stop signal") {
			t.Fatalf("Serve = %v, want the forced-stop error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a second signal did not stop Serve")
	}
}

func TestServeReportsAFailingListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	t.Setenv("NOTIFY_SOCKET", "")
	done := make(chan error, 1)
	go func() { done <- worker.Serve(&http.Server{}, ln, worker.WithSignals(syscall.SIGUSR1)) }()
	select {
	case err := <-done:
		if err == nil || !strings.HasPrefix(err.Error(), "serve: ") {
			t.Fatalf("Serve on a closed listener = %v, want a serve error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve on a closed listener did not return")
	}
}
