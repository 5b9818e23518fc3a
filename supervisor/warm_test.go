package supervisor

import (
	"context"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// TestWarmEndsWithItsContextAndLeavesNothing: a cancelled ctx ends Warm
// at once, hanging requests included, and no goroutine stays behind.
func TestWarmEndsWithItsContextAndLeavesNothing(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	r := warm(ctx, Warmup{Addr: srv.Listener.Addr().String(), Path: "/h", Conns: 8, Requests: 1000, Limit: time.Minute}, 0, nil, nil)
	ok, first := r.OK, r.First
	if ok != 0 || first == nil {
		t.Errorf("ok = %d, first failure %v; want 0 and the cancel", ok, first)
	}
	testutil.WaitFor(t, 10*time.Second, "Warm's goroutines to end", func() bool { return runtime.NumGoroutine() <= base })
}

// TestWarmCountsABodyThatNeverEndsAsAFailure: a 200 whose body trickles
// past the request's time limit was not answered.
func TestWarmCountsABodyThatNeverEndsAsAFailure(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		for r.Context().Err() == nil {
			w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	}))
	defer srv.Close()
	r := warm(context.Background(), Warmup{Addr: srv.Listener.Addr().String(), Path: "/h", Conns: 1, Requests: 1, Limit: 2 * time.Second}, 0, nil, nil)
	sent, ok, first := r.Sent, r.OK, r.First
	if sent != 1 || ok != 0 || first == nil {
		t.Errorf("sent %d, ok %d, first failure %v; want 1, 0 and the body's error", sent, ok, first)
	}
}

// TestWarmWithABadPathSaysSoAndSendsNothing: a path that makes no request
// is an error, not requests counted as sent.
func TestWarmWithABadPathSaysSoAndSendsNothing(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	r := warm(context.Background(), Warmup{Addr: srv.Listener.Addr().String(), Path: "/health%zz", Conns: 4, Requests: 100, Limit: 5 * time.Second}, 0, nil, nil)
	sent, ok, first := r.Sent, r.OK, r.First
	if sent != 0 || ok != 0 || first == nil || hits.Load() != 0 {
		t.Errorf("sent %d, ok %d, first failure %v, server hit %d times; want 0, 0, an error, 0", sent, ok, first, hits.Load())
	}
}

// TestWarmReachesEveryWorkerOfThePoolAndNoOther: with an idle live pool on
// the same socket, which takes its share of new connections, the warm-up
// of a new pool still sends every request it counts to the new pool, and
// to each of its workers. The helper workers log each warm-up request they
// answer; the live pool's lines are the strays, one per connection it took.
func TestWarmReachesEveryWorkerOfThePoolAndNoOther(t *testing.T) {
	ss := testSockets(t)
	log := filepath.Join(t.TempDir(), "warm.log")
	blueSpec := testSpec(t, ss, helperStart(t), 2)
	blueSpec.Env["HELPER_WARM_LOG"] = log
	// As an HTTP app's socket is by default (defer_accept): the kernel
	// hands a connection to a process only once its first bytes arrive,
	// so the warm-up must send some before it can ask whose it is.
	blueSpec.DeferAccept = 30 * time.Minute
	blue := startPool(t, blueSpec)
	greenSpec := testSpec(t, ss, helperStart(t), 2)
	greenSpec.Release = "v2"
	greenSpec.Env["HELPER_WARM_LOG"] = log
	greenSpec.DeferAccept = blueSpec.DeferAccept
	green := startPool(t, greenSpec)

	strays := 0
	for round := range 3 {
		os.Remove(log)
		r := green.Warm(context.Background(), Warmup{Addr: ss[0].LocalAddr(), Path: "/", Conns: 4, Requests: 400, Limit: 30 * time.Second})
		if r.Sent != 400 || r.OK != 400 || r.First != nil {
			t.Fatalf("round %d: sent %d, ok %d, first failure %v; want 400, 400, none", round, r.Sent, r.OK, r.First)
		}
		b, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		byPID := map[string]int{}
		byRelease := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			release, pid, _ := strings.Cut(line, " ")
			byRelease[release]++
			if release == "v2" {
				byPID[pid]++
			}
		}
		if byRelease["v2"] != 400 || byRelease["v1"] != 0 {
			t.Fatalf("round %d: the new pool answered %d warm-up requests, the live one %d (%d strays closed); want 400 and 0", round, byRelease["v2"], byRelease["v1"], r.Strays)
		}
		for i, st := range green.Status() {
			n := byPID[strconv.Itoa(st.PID)]
			if n == 0 || len(r.Workers) != 2 || r.Workers[i] != n {
				t.Fatalf("round %d: worker %d (pid %d) answered %d warm-up requests, counted %v", round, i, st.PID, n, r.Workers)
			}
		}
		strays += r.Strays
		t.Logf("round %d: per worker %v, %d connections the live pool took, closed", round, r.Workers, r.Strays)
	}
	if len(blue.Status()) != 2 {
		t.Fatal("the live pool changed")
	}
	t.Logf("strays over 3 rounds: %d", strays)
}

// TestWarmNeverCountsAnAnswerOfTheLivePoolThatClosesItsConnections: both
// pools answer Connection: close (as HTTP/1.0 servers do), the live one
// 200, the new one 500. No answer of the live pool is counted (none of
// its connections carries a warm-up request), so none of the 2xx.
func TestWarmNeverCountsAnAnswerOfTheLivePoolThatClosesItsConnections(t *testing.T) {
	ss := testSockets(t)
	log := filepath.Join(t.TempDir(), "warm.log")
	blueSpec := testSpec(t, ss, helperStart(t), 2)
	blueSpec.Env["HELPER_WARM_LOG"] = log
	// As an HTTP app's socket is by default (defer_accept): the kernel
	// hands a connection to a process only once its first bytes arrive,
	// so the warm-up must send some before it can ask whose it is.
	blueSpec.DeferAccept = 30 * time.Minute
	blueSpec.Env["HELPER_CLOSE"] = "1"
	startPool(t, blueSpec)
	greenSpec := testSpec(t, ss, helperStart(t), 2)
	greenSpec.Release = "v2"
	greenSpec.Env["HELPER_WARM_LOG"] = log
	greenSpec.DeferAccept = blueSpec.DeferAccept
	greenSpec.Env["HELPER_CLOSE"] = "1"
	greenSpec.Env["HELPER_HEALTH"] = "500"
	green := startPool(t, greenSpec)

	r := green.Warm(context.Background(), Warmup{Addr: ss[0].LocalAddr(), Path: "/healthz", Conns: 4, Requests: 200, Limit: 15 * time.Second})
	b, _ := os.ReadFile(log)
	byRelease := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		release, _, _ := strings.Cut(line, " ")
		byRelease[release]++
	}
	t.Logf("sent %d, ok %d, strays %d, per worker %v; answered: %v", r.Sent, r.OK, r.Strays, r.Workers, byRelease)
	if r.OK != 0 || byRelease["v1"] != 0 || r.Sent != 200 || byRelease["v2"] != 200 {
		t.Fatalf("sent %d, %d answered 2xx; the live pool answered %d, the new one %d; want no 2xx, none from the live pool, all 200 from the new one", r.Sent, r.OK, byRelease["v1"], byRelease["v2"])
	}
	if len(r.Workers) != 2 || r.Workers[0]+r.Workers[1] != r.Sent {
		t.Fatalf("per worker %v for %d sent: the owner of every connection is known", r.Workers, r.Sent)
	}
}

// TestWarmDoesNotReadABodyThatNeverEnds: a fast 200 whose body never ends
// is read up to its limit and the connection closed, not read on until
// the request's time limit.
func TestWarmDoesNotReadABodyThatNeverEnds(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		chunk := make([]byte, 64<<10)
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	t0 := time.Now()
	r := warm(context.Background(), Warmup{Addr: srv.Listener.Addr().String(), Path: "/h", Conns: 1, Requests: 3, Limit: 8 * time.Second}, 0, nil, nil)
	if took := time.Since(t0); r.Sent != 3 || took > 4*time.Second {
		t.Fatalf("sent %d (ok %d, first failure %v) in %s; want 3, well within the 8s limit", r.Sent, r.OK, r.First, took)
	}
}

// TestWarmDialsOnWhileAWorkerHadNoConnection: the live pool wins the
// first 300 connections, far past the redial bound; the warm-up dials on
// (paced) until the new worker has its connections, and sends them all.
func TestWarmDialsOnWhileAWorkerHadNoConnection(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	var dials atomic.Int64
	owner := func(context.Context, net.Conn, time.Duration) (int, bool) {
		if dials.Add(1) <= 300 {
			return -1, true // the live pool's
		}
		return 0, true
	}
	r := warm(context.Background(), Warmup{Addr: srv.Listener.Addr().String(), Path: "/h", Conns: 4, Requests: 40, Limit: 15 * time.Second}, 1, owner, nil)
	if r.Sent != 40 || r.OK != 40 || r.Strays != 300 || len(r.Workers) != 1 || r.Workers[0] != 40 {
		t.Fatalf("sent %d, ok %d, strays %d, per worker %v (first failure %v); want 40, 40, 300, [40]", r.Sent, r.OK, r.Strays, r.Workers, r.First)
	}
}

// TestWarmStartsNoRequestItsLimitWouldCutOff: requests answered in 1s, a
// limit of 5s. None starts in the last fifth of the limit, so each one
// sent is answered: a slow app (or a paced warm-up, which sends few) is
// not failed by the requests the limit would have cut off.
func TestWarmStartsNoRequestItsLimitWouldCutOff(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	r := warm(context.Background(), Warmup{Addr: srv.Listener.Addr().String(), Path: "/h", Conns: 1, Requests: 100, Limit: 5 * time.Second}, 0, nil, nil)
	if r.Sent == 0 || r.OK != r.Sent || r.First != nil {
		t.Fatalf("sent %d, ok %d, first failure %v; want every request sent answered", r.Sent, r.OK, r.First)
	}
}

// TestWarmClosesItsConnectionsAsLiveClientsDo: with ConnLife 50, each
// connection carries at most 50 requests and is then closed by the
// warm-up, which dials another; the server sees connections close while
// the warm-up still sends (its connections' whole life is warmed, not
// only their requests), and Conns counts them all.
func TestWarmClosesItsConnectionsAsLiveClientsDo(t *testing.T) {
	srv := newConnServer(t, nil)
	r := warm(context.Background(), Warmup{Addr: srv.Listener.Addr().String(), Path: "/h", Conns: 2, Requests: 400, ConnLife: 50, Limit: 30 * time.Second}, 0, nil, nil)
	if r.Sent != 400 || r.OK != 400 {
		t.Fatalf("sent %d, ok %d (first failure %v); want 400, 400", r.Sent, r.OK, r.First)
	}
	perConn, sentAfter := srv.counts()
	for addr, n := range perConn {
		if n > 50 {
			t.Errorf("connection %s carried %d requests; want at most 50", addr, n)
		}
	}
	if len(perConn) < 8 || r.Conns != len(perConn) {
		t.Errorf("the server saw %d connections, the warm-up counted %d; want at least 8 (400 requests, 50 each), the same", len(perConn), r.Conns)
	}
	if sentAfter < 200 {
		t.Errorf("%d requests came after the first connection closed; want most of the warm-up's 400 (connections close early)", sentAfter)
	}
}

// TestWarmKeepsAConnectionItCannotReplace: with ConnLife 10, the live pool
// takes every connection after each worker's first two. A connection
// closed for its life is one the warm-up may never get back: it is
// replaced only once the replacement is green's, else it carries on, and
// the warm-up still sends all 200 requests, well within its limit, each on
// a connection of green's (its first kept to the end).
func TestWarmKeepsAConnectionItCannotReplace(t *testing.T) {
	srv := newConnServer(t, nil)
	var dials atomic.Int64
	owner := func(context.Context, net.Conn, time.Duration) (int, bool) {
		if n := dials.Add(1); n <= 4 {
			return int(n % 2), true
		}
		return -1, true // the live pool's, from now on
	}
	fds := openFDs(t)
	t0 := time.Now()
	r := warm(context.Background(), Warmup{Addr: srv.Listener.Addr().String(), Path: "/h", Conns: 2, Requests: 200, ConnLife: 10, Limit: 20 * time.Second}, 2, owner, nil)
	took := time.Since(t0)
	// Every connection is closed, those set aside included (the server
	// closes its side once the client has).
	testutil.WaitFor(t, 5*time.Second, "the warm-up's connections to be closed", func() bool { return openFDs(t) <= fds })
	perConn, _ := srv.counts()
	if r.Sent != 200 || r.OK != 200 || len(r.Workers) != 2 || r.Workers[0]+r.Workers[1] != 200 || took > 5*time.Second {
		t.Fatalf("sent %d, ok %d, per worker %v, %d strays (first failure %v) in %s; want 200, 200, all green's, well within the 20s limit", r.Sent, r.OK, r.Workers, r.Strays, r.First, took)
	}
	if r.Conns != 4 || len(perConn) != 4 {
		t.Fatalf("the server saw %d connections, the warm-up counted %d; want the 4 green took", len(perConn), r.Conns)
	}
}

// TestWarmCountsExactlyWhileItReplacesConnections: whether a connection's
// last request (by ConnLife) fails, or the server closes on it, or a
// connection carries one request, or never reaches its ConnLife, Sent,
// OK and Conns are what the server saw, no connection carries more than
// ConnLife, and nothing is left open or running.
func TestWarmCountsExactlyWhileItReplacesConnections(t *testing.T) {
	for _, c := range []struct {
		name                  string
		life, failAt, closeAt int // failAt, closeAt: the request of a connection the server drops, or answers Connection: close
	}{
		{"one request each", 1, 0, 0},
		{"life past the share", 1000, 0, 0},
		{"the last request fails", 5, 5, 0},
		{"the server closes on the last", 5, 0, 5},
		{"the server closes first", 5, 0, 3},
		{"every first request fails", 5, 1, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := newConnServer(t, func(n int, w http.ResponseWriter) {
				switch n {
				case c.failAt:
					conn, _, _ := w.(http.Hijacker).Hijack()
					conn.Close()
				case c.closeAt:
					w.Header().Set("Connection", "close")
				}
			})
			fds, goroutines := openFDs(t), runtime.NumGoroutine()
			r := warm(context.Background(), Warmup{Addr: srv.Listener.Addr().String(), Path: "/h", Conns: 2, Requests: 100, ConnLife: c.life, Limit: 20 * time.Second}, 0, nil, nil)
			perConn, _ := srv.counts()
			total, most, ok := 0, 0, 100
			for _, n := range perConn {
				total += n
				most = max(most, n)
				if c.failAt > 0 && n >= c.failAt {
					ok-- // its request failAt failed
				}
			}
			conns := len(perConn)
			if r.Sent != 100 || total != 100 || r.OK != ok || r.Conns != conns || most > c.life {
				t.Errorf("sent %d, ok %d, %d connections counted; the server saw %d over %d connections, at most %d on one; want 100, %d, the same, at most %d", r.Sent, r.OK, r.Conns, total, conns, most, ok, c.life)
			}
			testutil.WaitFor(t, 5*time.Second, "the warm-up's connections and goroutines to end", func() bool {
				return openFDs(t) <= fds && runtime.NumGoroutine() <= goroutines
			})
		})
	}
}

// TestWarmReplacingConnectionsDoesNotSpinOnStrays: the live pool takes
// every second new connection and each connection carries one request:
// each request costs one stray, no more.
func TestWarmReplacingConnectionsDoesNotSpinOnStrays(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	var dials atomic.Int64
	owner := func(context.Context, net.Conn, time.Duration) (int, bool) {
		if dials.Add(1)%2 == 0 {
			return -1, true
		}
		return 0, true
	}
	r := warm(context.Background(), Warmup{Addr: srv.Listener.Addr().String(), Path: "/h", Conns: 4, Requests: 300, ConnLife: 1, Limit: 20 * time.Second}, 1, owner, nil)
	if r.Sent != 300 || r.OK != 300 || r.Conns != 300 || r.Strays > 300 || dials.Load() > 600 {
		t.Fatalf("sent %d, ok %d over %d connections, %d strays in %d dials; want 300, 300, 300, at most 300 in 600", r.Sent, r.OK, r.Conns, r.Strays, dials.Load())
	}
}

// TestWarmReplacingConnectionsReachesEveryWorkerWhenTheLivePoolWinsMost:
// the live pool takes 90% of new connections, the rest go to any of 4
// workers; with connections replaced every 25 requests, every request is
// still sent, each worker answers its share, well within the limit.
func TestWarmReplacingConnectionsReachesEveryWorkerWhenTheLivePoolWinsMost(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	var dials atomic.Uint64
	owner := func(context.Context, net.Conn, time.Duration) (int, bool) {
		x := dials.Add(1) * 0x9E3779B97F4A7C15 // a fixed scramble of the dial's number
		x ^= x >> 29
		if x%10 != 0 {
			return -1, true
		}
		return int(x / 10 % 4), true
	}
	t0 := time.Now()
	r := warm(context.Background(), Warmup{Addr: srv.Listener.Addr().String(), Path: "/h", Conns: 4, Requests: 1600, ConnLife: 25, Limit: 20 * time.Second}, 4, owner, nil)
	took := time.Since(t0)
	if r.Sent != 1600 || r.OK != 1600 || len(r.Workers) != 4 || took > 10*time.Second {
		t.Fatalf("sent %d, ok %d, per worker %v (%d strays) in %s; want 1600, 1600, every worker, well within 20s", r.Sent, r.OK, r.Workers, r.Strays, took)
	}
	for i, n := range r.Workers {
		if n < 100 {
			t.Errorf("worker %d answered %d of 1600 (per worker %v); want its share", i, n, r.Workers)
		}
	}
}

// connServer is an HTTP server that counts the requests each client
// connection carried, the connections closed, and the requests that came
// after the first close. answer, if set, answers a connection's nth
// request.
type connServer struct {
	*httptest.Server
	mu                 sync.Mutex
	perConn            map[string]int
	closed, afterClose int
}

func newConnServer(t *testing.T, answer func(n int, w http.ResponseWriter)) *connServer {
	s := &connServer{perConn: map[string]int{}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.perConn[r.RemoteAddr]++
		n := s.perConn[r.RemoteAddr]
		if s.closed > 0 {
			s.afterClose++
		}
		s.mu.Unlock()
		if answer != nil {
			answer(n, w)
		}
	}))
	s.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			s.mu.Lock()
			s.closed++
			s.mu.Unlock()
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// counts is what the server saw so far: requests per connection, and
// the requests after the first connection closed.
func (s *connServer) counts() (perConn map[string]int, afterClose int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.perConn), s.afterClose
}
