package supervisor

import (
	"context"
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
// how many were sent and how many answered 2xx.
//
// It warms a new pool before the cut-over. On the shared socket a new
// connection goes to whichever process accepts it first: under load the
// live workers are busy and the new ones idle, so the new ones take them,
// and their runtime compiles the request path before live traffic moves
// to them. A request that fails is counted, not retried, and never fails
// the deploy: the health gate has already decided.
func Warm(ctx context.Context, addr, path string, conns, requests int, limit time.Duration) (sent, ok int) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var left, nsent, nok atomic.Int64
	left.Store(int64(requests))
	var wg sync.WaitGroup
	for range max(1, min(conns, requests)) {
		wg.Go(func() {
			for ctx.Err() == nil && left.Add(-1) >= 0 {
				nsent.Add(1)
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
				if err != nil {
					return
				}
				req.Header.Set("User-Agent", WarmUserAgent)
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					nok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(nsent.Load()), int(nok.Load())
}
