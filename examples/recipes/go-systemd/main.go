// An app that uses go-systemd's activation package, as it would under
// systemd, under deployer (docs/recipes/go-systemd.md). It serves the
// inherited sockets, says READY=1, and drains on SIGTERM.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

const (
	grace           = 1500 * time.Millisecond // keep-alive clients take "Connection: close" meanwhile
	shutdownTimeout = 25 * time.Second        // below the app's drain_timeout (30s)
)

func main() {
	lns, err := activation.Listeners()
	if err != nil || len(lns) == 0 || lns[0] == nil {
		log.Fatalf("no inherited sockets (LISTEN_FDS; LISTEN_PID must be this process): run under deployer or systemd (%v)", err)
	}

	var draining atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s (pid %d)\n", os.Getenv("DEPLOYER_RELEASE"), os.Getpid())
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if draining.Load() {
				w.Header().Set("Connection", "close") // net/http closes the connection after this answer
			}
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	var open atomic.Int64 // connections not yet closed
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}

	for _, ln := range lns {
		go func() {
			if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed && !draining.Load() {
				log.Fatal(err)
			}
		}()
	}
	daemon.SdNotify(false, daemon.SdNotifyReady) // with health.notify: true

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	<-stop
	// 1. Stop accepting: the new release takes every new connection.
	draining.Store(true)
	for _, ln := range lns {
		ln.Close()
	}
	// 2. For the grace period (or until every connection is gone), answer
	// with "Connection: close". Shutdown now would close idle keep-alive
	// connections at once, and a request a client is sending on one would
	// be lost.
	for end := time.Now().Add(grace); open.Load() > 0 && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	// 3. Then close what is idle and wait for requests in flight.
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Printf("shutdown: %v", err)
	}
}
