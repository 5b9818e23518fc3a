package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
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
		resp, err := probeHTTP(ctx, client, "http://"+addr+p.HTTPPath)
		if err != nil {
			return probeFailed(ctx, p.HTTPPath, client.Timeout, err)
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			// The Location is the app's to size, and it goes into a one-line
			// reason, the ledger and DEPLOYER_ERROR.
			return &statusError{path: p.HTTPPath, code: resp.StatusCode, location: cut(resp.Header.Get("Location"), locationMax)}
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
	return p.check(ctx, probeClient(2*time.Second), addr)
}

// locationMax bounds the redirect's Location a failure names.
const locationMax = 200

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
		return err
	}
	defer CloseSockets(private)
	spec.deferAccept(private)
	p := &Pool{spec: spec}
	ws := p.workerSpec(0, private, false)
	ws.release = spec.Release + " preflight"
	ws.onChange, ws.keeper = nil, nil
	ws.quietTail = true
	started := time.Now()
	w := newWorker(ws, nil, WorkerRecord{})
	// Killed, not drained: it never had live traffic, and once it has
	// answered nothing should wait for it.
	defer func() { w.Kill(); <-w.Done() }()
	// failed explains a failure while the instance, if still running, can
	// be looked at: which sockets it opened itself.
	failed := func(err error) error {
		var own []ownListener
		if pid := w.livePID(); pid > 0 {
			own = ownListeners(pid, private)
		}
		out := w.tail.all()
		return &PreflightError{Err: err, Hint: hintFor(spec.Start, err, out, own), Output: out}
	}

	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, probe.Timeout)
	defer cancel()
	if !probe.Active() || spec.Notify != nil {
		// Up first: min_uptime, and READY=1 when notify is on.
		select {
		case err := <-w.up:
			if err != nil {
				return failed(fmt.Errorf("%w: %w", ErrUnhealthy, err))
			}
		case <-ctx.Done():
			return failed(preflightEnded(parent, probe, "not up"))
		}
		if !probe.Active() {
			*healthy = time.Since(started)
			return nil
		}
	}
	addr := private[0].LocalAddr()
	client := probeClient(time.Second)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	last, finished := "no answer", false
	definite, definiteSince := 0, time.Time{} // answers in a row that say the path is wrong
	var lastHeld time.Time                    // when the instance was last seen holding its sockets
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
		// A worker that answers, but with a redirect or a 404, will not
		// answer otherwise later: say so now rather than after Timeout.
		var se *statusError
		if errors.As(err, &se) && se.definite() {
			if definite == 0 {
				definiteSince = time.Now()
			}
			definite++
			if definite >= definiteAnswers && time.Since(definiteSince) >= definiteFor {
				return failed(fmt.Errorf("%w: %w, %d times in a row", ErrUnhealthy, err, definite))
			}
		} else {
			definite = 0
		}
		// An instance that let go of every socket it inherited can never
		// answer on them (puma closes an "unused activated socket"): say
		// so now rather than after Timeout.
		if time.Since(lastHeld) >= heldCheck && time.Since(started) >= max(spec.MinUptime, heldCheck) {
			lastHeld = time.Now()
			if pid := w.livePID(); pid > 0 {
				if holds, known := instanceHolds(pid, private); known && !holds {
					return failed(fmt.Errorf("%w: it closed the socket it inherited (fd 3) and can never answer on it", ErrUnhealthy))
				}
			}
		}
		select {
		case <-w.Done():
			return failed(fmt.Errorf("%w: %w", ErrUnhealthy, w.Err()))
		case <-ctx.Done():
			return failed(preflightEnded(parent, probe, last))
		case <-tick.C:
		}
	}
}

// A health path that answers definiteAnswers times in a row, over at
// least definiteFor, with a redirect or a client error is wrong: the
// preflight ends then, not after health.timeout.
const (
	definiteAnswers = 5
	definiteFor     = 2 * time.Second
)

// heldCheck paces the look (in /proc) at whether the preflight instance
// still holds the sockets it inherited.
const heldCheck = time.Second

// preflightEnded is Preflight's error once its context is done. When
// probe.Timeout ran out the release is unhealthy and why says what the
// probes last saw; when the caller's context ended first, the preflight was
// stopped before any verdict and the error wraps the caller's reason.
func preflightEnded(parent context.Context, probe Probe, why string) error {
	if err := context.Cause(parent); err != nil {
		return fmt.Errorf("stopped (%s): %w", why, err)
	}
	return fmt.Errorf("%w after %s: %s", ErrUnhealthy, probe.Timeout, why)
}

// probeClient makes one probe request per connection and never follows a
// redirect: a health path must answer 2xx itself (a redirect to a login
// page that answers 200 says nothing about the app).
func probeClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout:       timeout,
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// probeFailed says why a probe got no answer, without net/http's wording.
// An error of the caller's context ending is passed as it is: it is not the
// app's doing.
func probeFailed(ctx context.Context, path string, timeout time.Duration, err error) error {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return err
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("GET %s: no answer within %s", path, timeout)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("GET %s: connection refused", path)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("GET %s: the connection was closed without an answer", path)
	}
	return fmt.Errorf("GET %s: %w", path, err)
}

// probeHTTP GETs url; the response's body is closed.
func probeHTTP(ctx context.Context, c *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}
