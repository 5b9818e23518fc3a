package testutil

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf records the failure and ends only
// the goroutine of the helper under test, so a test can check that the
// helper fails, and with what message.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	fatals []string
}

func (r *recorder) Helper()             {}
func (r *recorder) Logf(string, ...any) {}
func (r *recorder) Fatalf(f string, a ...any) {
	r.mu.Lock()
	r.fatals = append(r.fatals, fmt.Sprintf(f, a...))
	r.mu.Unlock()
	runtime.Goexit()
}

// run calls f with a recorder in a goroutine of its own and returns the
// Fatalf messages, none if f returned normally.
func run(t *testing.T, f func(tb testing.TB)) []string {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); f(r) }()
	<-done
	return r.fatals
}

func TestWaitForFailsOnceTheLimitPasses(t *testing.T) {
	start := time.Now()
	fatals := run(t, func(tb testing.TB) { WaitFor(tb, 200*time.Millisecond, "a thing", func() bool { return false }) })
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("gave up after %s, before the limit", took)
	}
	if len(fatals) != 1 || fatals[0] != "timed out after 200ms waiting for a thing" {
		t.Fatalf("fatals = %q", fatals)
	}
}

func TestWaitForReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	fatals := run(t, func(tb testing.TB) {
		WaitFor(tb, 10*time.Second, "the third call", func() bool { calls++; return calls == 3 })
	})
	if len(fatals) != 0 || calls != 3 {
		t.Fatalf("fatals %q after %d calls", fatals, calls)
	}
}

// TestLoadCountsARequestLostOnAKeptAliveConnection: a server that closes a
// kept-alive connection instead of answering its second request loses that
// request. net/http's Transport would retry such a GET on a new connection
// and hide the loss; Load must count it.
func TestLoadCountsARequestLostOnAKeptAliveConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi\n")
				http.ReadRequest(br) // and close without an answer
			}()
		}
	}()
	l := StartLoad(t, "http://"+ln.Addr().String()+"/", 1)
	WaitFor(t, 10*time.Second, "a few answers", func() bool { return l.OK() >= 3 })
	fatals := run(t, func(tb testing.TB) { l.Finish(tb, "the lossy server", 1) })
	if len(fatals) != 1 || !strings.Contains(fatals[0], "requests failed during the lossy server, e.g. [read response: ") {
		t.Fatalf("fatals = %q", fatals)
	}
}

func TestLoadCountsAnswersOtherThan200AsFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	l := StartLoad(t, srv.URL+"/", 1)
	fatals := run(t, func(tb testing.TB) {
		WaitFor(tb, 10*time.Second, "a failure", func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			return l.failed > 0
		})
		l.Finish(tb, "the sick server", 0)
	})
	if len(fatals) != 1 || !strings.Contains(fatals[0], `status 503 Service Unavailable: "not ready\n"`) {
		t.Fatalf("fatals = %q", fatals)
	}
}

// TestLoadTalliesAnswersByNameAndPassesWhenNothingIsLost: against a server
// that loses nothing and now and then asks to close the connection, Finish
// passes, and the tally counts every answer and every close.
func TestLoadTalliesAnswersByNameAndPassesWhenNothingIsLost(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%10 == 0 {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, "worker blue: hi\n")
	}))
	defer srv.Close()
	name := func(body string) (string, bool) {
		rest, ok := strings.CutPrefix(body, "worker ")
		who, _, found := strings.Cut(rest, ":")
		return who, ok && found
	}
	l := StartLoad(t, srv.URL+"/", 4, Tally(name), ReconnectEvery(7))
	WaitFor(t, 10*time.Second, "100 answers from blue", func() bool { return l.Served("blue") >= 100 })
	if fatals := run(t, func(tb testing.TB) { l.Finish(tb, "a healthy server", 100) }); len(fatals) != 0 {
		t.Fatalf("fatals = %q", fatals)
	}
	if l.Served("blue") != l.OK() || l.AskedToClose("blue") == 0 {
		t.Fatalf("served %d of %d ok, %d asked to close", l.Served("blue"), l.OK(), l.AskedToClose("blue"))
	}
}

func TestLoadFinishFailsWhenTooFewRequestsRan(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi\n") }))
	defer srv.Close()
	l := StartLoad(t, srv.URL+"/", 1)
	fatals := run(t, func(tb testing.TB) { l.Finish(tb, "a moment", 1_000_000_000) })
	if len(fatals) != 1 || !strings.Contains(fatals[0], "requests ran during a moment: the load proved nothing") {
		t.Fatalf("fatals = %q", fatals)
	}
}
