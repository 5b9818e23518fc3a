package supervisor

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// WarmUserAgent is the User-Agent of the warm-up requests, for an app that
// wants to tell them apart (or leave them out of its access log).
const WarmUserAgent = "deployer-warmup"

// Warm sends GET path to addr, over conns keep-alive connections at once,
// until requests have been sent, limit has passed or ctx ends. It returns
// how many were sent, how many answered 2xx, and the first failure, if any.
//
// It warms a new pool before the cut-over. On the shared socket a new
// connection goes to whichever process accepts it first: under load the
// live workers are busy and the new ones idle, so the new ones take them,
// and their runtime compiles the request path before live traffic moves
// to them. A request that fails is counted, not retried: the caller
// decides what the count means.
func Warm(ctx context.Context, addr, path string, conns, requests int, limit time.Duration) (sent, ok int, first error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	// A cold first request may be slow: that is what the warm-up is for.
	client := &http.Client{Transport: tr, Timeout: min(limit, 10*time.Second),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var left, nsent, nok atomic.Int64
	var firstMu sync.Mutex
	fail := func(err error) {
		firstMu.Lock()
		if first == nil {
			first = err
		}
		firstMu.Unlock()
	}
	left.Store(int64(requests))
	var wg sync.WaitGroup
	for range max(1, min(conns, requests)) {
		wg.Go(func() {
			for ctx.Err() == nil && left.Add(-1) >= 0 {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
				if err != nil {
					fail(err)
					return
				}
				nsent.Add(1)
				req.Header.Set("User-Agent", WarmUserAgent)
				resp, err := client.Do(req)
				if err != nil {
					fail(err)
					continue
				}
				_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				if err != nil {
					fail(fmt.Errorf("GET %s: the answer's body: %w", path, err))
				} else if resp.StatusCode/100 == 2 {
					nok.Add(1)
				} else {
					fail(fmt.Errorf("GET %s: HTTP %d", path, resp.StatusCode))
				}
			}
		})
	}
	wg.Wait()
	return int(nsent.Load()), int(nok.Load()), first
}
