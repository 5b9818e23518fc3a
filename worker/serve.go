package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for [Serve].
const (
	// DefaultGrace is how long a draining server keeps its open connections
	// so that keep-alive clients, told "Connection: close", can finish.
	DefaultGrace = 1500 * time.Millisecond
	// DefaultShutdownTimeout bounds the wait for in-flight requests after
	// the grace period. It is below the daemon's default drain_timeout
	// (30s), after which the daemon kills the worker.
	DefaultShutdownTimeout = 25 * time.Second
)

// An Option adjusts [Serve] and [ServeAll].
type Option func(*options)

type options struct {
	signals         []os.Signal
	grace           time.Duration
	shutdownTimeout time.Duration
}

// WithSignals sets the signals that start the drain (default SIGTERM, the
// daemon's default stop_signal). Match the app's stop_signal.
func WithSignals(sigs ...os.Signal) Option {
	return func(o *options) { o.signals = sigs }
}

// WithGrace sets the grace period (default [DefaultGrace]). It ends early
// once every connection has closed.
func WithGrace(d time.Duration) Option {
	return func(o *options) { o.grace = d }
}

// WithShutdownTimeout sets how long to wait for in-flight requests after the
// grace period (default [DefaultShutdownTimeout]).
func WithShutdownTimeout(d time.Duration) Option {
	return func(o *options) { o.shutdownTimeout = d }
}

// Serve serves srv on ln as [ServeAll] does.
func Serve(srv *http.Server, ln net.Listener, opts ...Option) error {
	return ServeAll(srv, []net.Listener{ln}, opts...)
}

// ServeAll serves srv on every listener in lns, sends READY=1 (see [Notify]),
// and on the stop signal drains and returns nil:
//
//  1. it closes lns, this process's copies of the sockets (the other
//     workers keep accepting on them), and sends STOPPING=1;
//  2. from then on every response carries "Connection: close", so a
//     keep-alive client closes its connection after its next request
//     instead of racing a server-side close;
//  3. it waits for the grace period, or until no connection is left;
//  4. it calls srv.Shutdown, bounded by the shutdown timeout, which closes
//     idle connections and waits for in-flight requests.
//
// A second stop signal cuts the drain short: ServeAll closes srv and returns
// an error. ServeAll also returns an error if a listener fails or READY=1
// cannot be sent. It wraps srv.Handler and srv.ConnState, so set them
// before the call and leave srv alone afterwards.
func ServeAll(srv *http.Server, lns []net.Listener, opts ...Option) error {
	if len(lns) == 0 {
		return errors.New("serve: no listeners")
	}
	o := options{
		signals:         []os.Signal{syscall.SIGTERM},
		grace:           DefaultGrace,
		shutdownTimeout: DefaultShutdownTimeout,
	}
	for _, opt := range opts {
		opt(&o)
	}

	stop := make(chan os.Signal, 2)
	signal.Notify(stop, o.signals...)
	defer signal.Stop(stop)

	d := newDrain(srv)
	served := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { served <- srv.Serve(ln) }()
	}
	if err := Ready(); err != nil {
		srv.Close()
		return fmt.Errorf("serve: %w", err)
	}
	select {
	case err := <-served:
		if errors.Is(err, http.ErrServerClosed) {
			return err // the caller shut srv down; net/http reports it so
		}
		srv.Close()
		return fmt.Errorf("serve: %w", err)
	case <-stop:
	}
	return d.run(srv, lns, served, stop, o)
}

// drain tracks the server's connections and marks its responses once the
// drain has begun.
type drain struct {
	draining atomic.Bool

	mu      sync.Mutex
	open    int           // connections not yet closed or hijacked
	changed chan struct{} // poked (never blocking) when open drops
}

// newDrain wraps srv's Handler and ConnState.
func newDrain(srv *http.Server) *drain {
	d := &drain{changed: make(chan struct{}, 1)}
	next := srv.Handler
	if next == nil {
		next = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.draining.Load() {
			// net/http closes the connection after this response.
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
	hook := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		d.track(s)
		if hook != nil {
			hook(c, s)
		}
	}
	return d
}

func (d *drain) track(s http.ConnState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch s {
	case http.StateNew:
		d.open++
	case http.StateClosed, http.StateHijacked:
		d.open--
		select {
		case d.changed <- struct{}{}:
		default:
		}
	}
}

func (d *drain) idle() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.open == 0
}

// run performs the drain described on ServeAll.
func (d *drain) run(srv *http.Server, lns []net.Listener, served <-chan error, stop <-chan os.Signal, o options) error {
	d.draining.Store(true)
	for _, ln := range lns {
		// Close, never shutdown(2): this closes only our descriptor.
		ln.Close()
	}
	// Each accept loop now ends; wait for them so that Shutdown does not
	// close the listeners a second time and report that as its error.
	for range lns {
		<-served
	}
	_ = Notify("STOPPING=1") // best effort: the daemon is stopping us anyway

	grace := time.NewTimer(o.grace)
	defer grace.Stop()
wait:
	for !d.idle() {
		select {
		case <-d.changed:
		case <-grace.C:
			break wait
		case <-stop:
			srv.Close()
			return errors.New("drain: forced by a second stop signal")
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	forced := make(chan struct{})
	go func() {
		select {
		case <-stop:
			close(forced)
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
		select {
		case <-forced:
			return errors.New("drain: forced by a second stop signal")
		default:
		}
		return fmt.Errorf("drain: %w", err)
	}
	return nil
}
