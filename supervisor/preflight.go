package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Probe says how to tell that a worker is healthy.
type Probe struct {
	// HTTPPath, if set, must answer GET with 2xx.
	HTTPPath string
	// Timeout bounds the whole check.
	Timeout time.Duration
}

// ErrUnhealthy means a release failed its health check.
var ErrUnhealthy = errors.New("unhealthy")

// pollInterval paces health probes: a socket gives no event for "healthy".
const pollInterval = 100 * time.Millisecond

// Preflight runs one instance of spec's release on private loopback sockets,
// never the live ones, and probes it until healthy or probe.Timeout passes.
// The instance is drained and its sockets closed before Preflight returns.
func Preflight(ctx context.Context, spec PoolSpec, probe Probe) error {
	private, err := privateSockets(spec.App+"-preflight", len(spec.Sockets))
	if err != nil {
		return fmt.Errorf("preflight: %w", err)
	}
	defer CloseSockets(private)
	p := &Pool{spec: spec}
	ws := p.workerSpec(0, private, false)
	ws.release = spec.Release + " preflight"
	w := newWorker(ws)
	defer func() { w.Retire(); <-w.Done() }()

	ctx, cancel := context.WithTimeout(ctx, probe.Timeout)
	defer cancel()
	if probe.HTTPPath == "" {
		select {
		case err := <-w.up:
			if err != nil {
				return fmt.Errorf("preflight: %w: %w", ErrUnhealthy, err)
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("preflight: %w: not up within %s", ErrUnhealthy, probe.Timeout)
		}
	}
	url := "http://" + private[0].LocalAddr() + probe.HTTPPath
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	last := "no answer"
	for {
		status, err := probeHTTP(ctx, client, url)
		if err == nil && status >= 200 && status < 300 {
			return nil
		}
		if err != nil {
			if ctx.Err() == nil { // the deadline's own error says nothing about the worker
				last = err.Error()
			}
		} else {
			last = fmt.Sprintf("HTTP %d", status)
		}
		select {
		case <-w.Done():
			return fmt.Errorf("preflight: %w: %w", ErrUnhealthy, w.Err())
		case <-ctx.Done():
			return fmt.Errorf("preflight: %w: GET %s: %s after %s", ErrUnhealthy, probe.HTTPPath, last, probe.Timeout)
		case <-tick.C:
		}
	}
}

func probeHTTP(ctx context.Context, c *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
