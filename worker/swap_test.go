package worker_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// load is a pool of HTTP/1.1 keep-alive clients, each on its own
// connection, sending GET / back to back the way wrk does: no retries, a new
// connection only after "Connection: close", after an error, or every
// reconnectEvery requests (so that a newly started worker gets connections
// while the old one still serves).
type load struct {
	addr string
	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	served   map[string]int // responses by worker name
	hints    map[string]int // responses that carried Connection: close
	failures int
	errs     []error // the first few failures
}

const (
	loadClients    = 32
	reconnectEvery = 50
	maxFailures    = 1000 // a client pool gives up rather than spin
)

func startLoad(t *testing.T, addr string) *load {
	l := &load{addr: addr, stop: make(chan struct{}), served: map[string]int{}, hints: map[string]int{}}
	for range loadClients {
		l.wg.Add(1)
		go l.client()
	}
	t.Cleanup(l.halt)
	return l
}

func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *load) client() {
	defer l.wg.Done()
	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	sent := 0
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		if conn == nil || sent == reconnectEvery {
			if conn != nil {
				conn.Close()
			}
			var err error
			if conn, err = net.DialTimeout("tcp", l.addr, 5*time.Second); err != nil {
				conn = nil
				if !l.fail(fmt.Errorf("dial: %w", err)) {
					return
				}
				continue
			}
			br, sent = bufio.NewReader(conn), 0
		}
		sent++
		who, closing, err := roundTrip(conn, br)
		if err != nil {
			conn.Close()
			conn = nil
			if !l.fail(err) {
				return
			}
			continue
		}
		l.mu.Lock()
		l.served[who]++
		if closing {
			l.hints[who]++
		}
		l.mu.Unlock()
		if closing {
			conn.Close()
			conn = nil
		}
	}
}

// roundTrip sends one GET / and returns the name of the worker that
// answered and whether it asked to close the connection.
func roundTrip(conn net.Conn, br *bufio.Reader) (string, bool, error) {
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		return "", false, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", false, fmt.Errorf("read response: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", false, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", false, fmt.Errorf("status %s: %q", resp.Status, body)
	}
	who, ok := workerName(string(body))
	if !ok {
		return "", false, fmt.Errorf("body %q names no worker", body)
	}
	return who, resp.Close, nil
}

// workerName finds "worker NAME:" in an answer such as
// "hello from v3 (0123abc) worker 1: hi".
func workerName(body string) (string, bool) {
	_, rest, ok := strings.Cut(body, "worker ")
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, ":")
	return name, ok && name != ""
}

// fail records err and reports whether the client should go on.
func (l *load) fail(err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures++
	if len(l.errs) < 5 {
		l.errs = append(l.errs, err)
	}
	return l.failures < maxFailures
}

func (l *load) count(who string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.served[who]
}

// waitServed waits until worker who has answered at least n requests.
func (l *load) waitServed(t *testing.T, who string, n int) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%d responses from %s", n, who), func() bool {
		return l.count(who) >= n
	})
}

// swapUnderLoad proves a worker's drain: under keep-alive load on one shared
// socket, it starts worker "blue", then worker "green" on the same socket,
// stops blue with SIGTERM, and requires blue to exit 0 and no request to
// fail. start starts the named worker with the socket at fd 3; the worker
// must answer / with "worker NAME:" in the body.
func swapUnderLoad(t *testing.T, start func(t *testing.T, name string, sock *os.File) *proc) {
	ln := listenTCP(t)
	sock := inheritable(t, ln)

	blue := start(t, "blue", sock)
	l := startLoad(t, ln.Addr().String())
	l.waitServed(t, "blue", 500)
	green := start(t, "green", sock)
	l.waitServed(t, "green", 100)

	blue.signal(t, syscall.SIGTERM)
	blue.wait(t, 30*time.Second)
	after := l.count("green")
	l.waitServed(t, "green", after+1000) // green carries the load alone
	l.halt()

	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("served %v; Connection: close sent %v; %d failed", l.served, l.hints, l.failures)
	if l.failures > 0 {
		t.Errorf("%d requests failed during the swap, first: %v", l.failures, l.errs)
	}
	if l.hints["blue"] == 0 {
		t.Errorf("blue never answered with Connection: close while draining")
	}
	green.signal(t, syscall.SIGTERM)
	green.wait(t, 30*time.Second)
}

func TestServeSwapUnderLoadLosesNoRequest(t *testing.T) {
	swapUnderLoad(t, func(t *testing.T, name string, sock *os.File) *proc {
		ns := listenNotify(t, false)
		p := startHelper(t, "serve", []*os.File{sock}, "NOTIFY_SOCKET="+ns.name, "DEPLOYER_WORKER="+name)
		ns.expect(t, "READY=1", 30*time.Second)
		return p
	})
}
