package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/deployer/deployer/internal/account"
)

// Probe says how to tell that a worker is healthy. With none of HTTPPath,
// TCP and Command set, a worker is healthy once it is up (min_uptime, and
// READY=1 with notify).
type Probe struct {
	// HTTPPath, if set, must answer GET with 2xx.
	HTTPPath string
	// TCP, if set, needs a connection to be accepted by the worker.
	TCP bool
	// Command, if set, must exit 0; it runs with sh -c in Dir with Env plus
	// DEPLOYER_HEALTH_ADDR, the address probed.
	Command string
	Dir     string
	Env     []string
	// Account, if set, runs Command as that user; nil: as the daemon.
	Account *account.Account
	// Timeout bounds the whole check.
	Timeout time.Duration
}

// check runs the probe once against addr: nil means healthy.
func (p Probe) check(ctx context.Context, client *http.Client, addr string) error {
	switch {
	case p.HTTPPath != "":
		status, err := probeHTTP(ctx, client, "http://"+addr+p.HTTPPath)
		if err != nil {
			return err
		}
		if status < 200 || status > 299 {
			return fmt.Errorf("GET %s: HTTP %d", p.HTTPPath, status)
		}
		return nil
	case p.TCP:
		return probeTCP(ctx, addr)
	case p.Command != "":
		return probeCommand(ctx, p, addr)
	}
	return nil
}

// Active reports whether the probe checks anything beyond uptime.
func (p Probe) Active() bool { return p.HTTPPath != "" || p.TCP || p.Command != "" }

// Check probes addr once, as health.watch does on the live address.
func (p Probe) Check(ctx context.Context, addr string) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return p.check(ctx, client, addr)
}

// pollInterval paces health probes: a socket gives no event for "healthy".
const pollInterval = 100 * time.Millisecond

// Preflight runs one instance of spec's release on private loopback sockets,
// never the live ones, and probes it until healthy or probe.Timeout passes.
// It returns how long the instance took from its start to healthy: a pool
// of the same release is not ready for traffic sooner. The instance is
// killed (it never had live traffic, so there is nothing to drain) and its
// sockets closed before Preflight returns.
func Preflight(ctx context.Context, spec PoolSpec, probe Probe) (time.Duration, error) {
	var healthy time.Duration
	err := preflight(ctx, spec, probe, &healthy)
	return healthy, err
}

func preflight(ctx context.Context, spec PoolSpec, probe Probe, healthy *time.Duration) error {
	private, err := privateSockets(spec.App+"-preflight", len(spec.Sockets))
	if err != nil {
		return fmt.Errorf("preflight: %w", err)
	}
	defer CloseSockets(private)
	p := &Pool{spec: spec}
	ws := p.workerSpec(0, private, false)
	ws.release = spec.Release + " preflight"
	ws.onChange, ws.keeper = nil, nil
	started := time.Now()
	w := newWorker(ws, nil, WorkerRecord{})
	// Killed, not drained: it never had live traffic, and once it has
	// answered nothing should wait for it.
	defer func() { w.Kill(); <-w.Done() }()

	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, probe.Timeout)
	defer cancel()
	if !probe.Active() || spec.Notify != nil {
		// Up first: min_uptime, and READY=1 when notify is on.
		select {
		case err := <-w.up:
			if err != nil {
				return fmt.Errorf("preflight: %w: %w", ErrUnhealthy, err)
			}
		case <-ctx.Done():
			return preflightEnded(parent, probe, "not up")
		}
		if !probe.Active() {
			*healthy = time.Since(started)
			return nil
		}
	}
	addr := private[0].LocalAddr()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	last, finished := "no answer", false
	for {
		err := probe.check(ctx, client, addr)
		if err == nil {
			*healthy = time.Since(started)
			return nil
		}
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// The deadline cut this probe short: that says nothing about the
			// worker, so it must not hide what the last finished probe said.
			if !finished {
				last = err.Error()
			}
		} else {
			last, finished = err.Error(), true
		}
		select {
		case <-w.Done():
			return fmt.Errorf("preflight: %w: %w", ErrUnhealthy, w.Err())
		case <-ctx.Done():
			return preflightEnded(parent, probe, last)
		case <-tick.C:
		}
	}
}

// preflightEnded is Preflight's error once its context is done. When
// probe.Timeout ran out the release is unhealthy and why says what the
// probes last saw; when the caller's context ended first, the preflight was
// stopped before any verdict and the error wraps the caller's reason.
func preflightEnded(parent context.Context, probe Probe, why string) error {
	if err := context.Cause(parent); err != nil {
		return fmt.Errorf("preflight: stopped (%s): %w", why, err)
	}
	return fmt.Errorf("preflight: %w: %s after %s", ErrUnhealthy, why, probe.Timeout)
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
