package testutil

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

const (
	// requestTimeout bounds each dial and each request/response.
	requestTimeout = 10 * time.Second
	// maxFailures stops the clients rather than let them spin against a
	// server that is gone; the test fails on the first failure anyway.
	maxFailures = 1000
	// sampleFailures is how many failures Finish shows.
	sampleFailures = 5
)

// Load is a pool of HTTP/1.1 keep-alive clients, each on its own
// connection, sending GET back to back until stopped. A request succeeds
// when it gets 200 OK and its whole body; anything else — a refused dial, a
// connection closed before or during the response, another status — is a
// failure, and is not retried. A client opens a new connection only after a
// response with "Connection: close", after a failure, or (with
// ReconnectEvery) after so many requests.
type Load struct {
	host, path string
	reconnect  int
	name       func(body string) (string, bool)

	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu       sync.Mutex
	ok       int
	failed   int
	sample   []string       // the first few failures
	served   map[string]int // successful answers by name (with Tally)
	closings map[string]int // of those, the ones with Connection: close
}

// LoadOption changes how a Load sends or counts.
type LoadOption func(*Load)

// ReconnectEvery makes each client open a new connection after n requests
// on one, so that a server started during the load gets connections too.
func ReconnectEvery(n int) LoadOption { return func(l *Load) { l.reconnect = n } }

// Tally counts successful answers by the name that name finds in the body
// (for example the worker that answered), for Served and AskedToClose. A
// 200 whose body name cannot read is a failure.
func Tally(name func(body string) (string, bool)) LoadOption {
	return func(l *Load) { l.name = name }
}

// StartLoad starts clients clients GETting rawURL (http://host:port/path)
// until Stop or Finish, or until t ends.
func StartLoad(t testing.TB, rawURL string, clients int, opts ...LoadOption) *Load {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		t.Fatalf("load: %q is not an http:// URL (%v)", rawURL, err)
	}
	l := &Load{host: u.Host, path: u.RequestURI(), stop: make(chan struct{}),
		served: map[string]int{}, closings: map[string]int{}}
	for _, o := range opts {
		o(l)
	}
	for range clients {
		l.wg.Add(1)
		go l.client()
	}
	t.Cleanup(l.Stop)
	return l
}

// Stop stops the clients and waits for them; it may be called more than once.
func (l *Load) Stop() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// Finish stops the clients, logs what they did, and fails t if any request
// failed or fewer than atLeast succeeded: a load that ran too little proves
// nothing. what names the period of the load in the messages.
func (l *Load) Finish(t testing.TB, what string, atLeast int) {
	t.Helper()
	l.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("requests during %s: %d ok, %d failed", what, l.ok, l.failed)
	if l.name != nil {
		t.Logf("answers during %s by name %v; with Connection: close %v", what, l.served, l.closings)
	}
	if l.failed != 0 {
		t.Fatalf("%d requests failed during %s, e.g. %v", l.failed, what, l.sample)
	}
	if l.ok < atLeast {
		t.Fatalf("only %d requests ran during %s: the load proved nothing", l.ok, what)
	}
}

// OK is the number of requests that have succeeded so far.
func (l *Load) OK() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok
}

// Failed is the number of requests that have failed so far.
func (l *Load) Failed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// Sample is the first few failures, as Finish shows them.
func (l *Load) Sample() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.sample...)
}

// Served is the number of successful answers so far whose body named name
// (see Tally).
func (l *Load) Served(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.served[name]
}

// AskedToClose is the number of successful answers so far whose body named
// name and that carried "Connection: close".
func (l *Load) AskedToClose(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closings[name]
}

func (l *Load) client() {
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
		if conn == nil || l.reconnect > 0 && sent == l.reconnect {
			if conn != nil {
				conn.Close()
			}
			var err error
			if conn, err = net.DialTimeout("tcp", l.host, requestTimeout); err != nil {
				conn = nil
				if !l.fail(fmt.Errorf("dial: %w", err)) {
					return
				}
				continue
			}
			br, sent = bufio.NewReader(conn), 0
		}
		sent++
		body, closing, err := l.roundTrip(conn, br)
		if err == nil {
			err = l.count(body, closing)
		}
		if err != nil {
			conn.Close()
			conn = nil
			if !l.fail(err) {
				return
			}
			continue
		}
		if closing {
			conn.Close()
			conn = nil
		}
	}
}

// roundTrip sends one GET on conn and returns the body of a 200 response
// and whether the server asked to close the connection.
func (l *Load) roundTrip(conn net.Conn, br *bufio.Reader) (string, bool, error) {
	conn.SetDeadline(time.Now().Add(requestTimeout))
	if _, err := io.WriteString(conn, "GET "+l.path+" HTTP/1.1\r\nHost: "+l.host+"\r\n\r\n"); err != nil {
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
	return string(body), resp.Close, nil
}

// count records a successful answer, or says why it is not one.
func (l *Load) count(body string, closing bool) error {
	var who string
	if l.name != nil {
		var ok bool
		if who, ok = l.name(body); !ok {
			return fmt.Errorf("body %q names no one", body)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ok++
	if l.name != nil {
		l.served[who]++
		if closing {
			l.closings[who]++
		}
	}
	return nil
}

// fail records err and reports whether the client should go on.
func (l *Load) fail(err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed++
	if len(l.sample) < sampleFailures {
		l.sample = append(l.sample, err.Error())
	}
	return l.failed < maxFailures
}
