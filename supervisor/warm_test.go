package supervisor

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
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
	_, ok, first := Warm(ctx, srv.Listener.Addr().String(), "/h", 8, 1000, time.Minute)
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
	sent, ok, first := Warm(context.Background(), srv.Listener.Addr().String(), "/h", 1, 1, 2*time.Second)
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
	sent, ok, first := Warm(context.Background(), srv.Listener.Addr().String(), "/health%zz", 4, 100, 5*time.Second)
	if sent != 0 || ok != 0 || first == nil || hits.Load() != 0 {
		t.Errorf("sent %d, ok %d, first failure %v, server hit %d times; want 0, 0, an error, 0", sent, ok, first, hits.Load())
	}
}
