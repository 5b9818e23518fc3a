package server

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/deployer/deployer/control"
	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/internal/buildinfo"
	"github.com/deployer/deployer/internal/systemd"
)

// controlHandler is the control API of d (package control) plus the
// daemon's own endpoints: GET /v1/version and POST /v1/upgrade.
func (s *Server) controlHandler(d *deployer.Daemon) http.Handler {
	mux := control.NewMux(d)
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, _ *http.Request) {
		bi := buildinfo.Get()
		control.Reply(w, control.VersionInfo{Version: bi.Version, Commit: bi.Commit, GoVersion: bi.GoVersion,
			Started: s.started.UTC(), PID: os.Getpid()}, nil)
	})
	mux.HandleFunc("GET /v1/fleet/status", s.handleFleetStatus(d))
	mux.HandleFunc("POST /v1/fleet/apps/{app}/rollback", func(w http.ResponseWriter, r *http.Request) {
		var req control.RollbackRequest
		if control.Decode(w, r, &req) {
			control.Stream(w, func(out io.Writer) error {
				return s.fleetRollback(r.Context(), d, r.PathValue("app"), req.To, control.Invoker(r, req.By), out)
			})
		}
	})
	mux.HandleFunc("POST /v1/upgrade", func(w http.ResponseWriter, r *http.Request) {
		var req control.UpgradeRequest
		if !control.Decode(w, r, &req) {
			return
		}
		var handedOver bool
		control.Stream(w, func(out io.Writer) error {
			var err error
			handedOver, err = s.Upgrade(r.Context(), req.Binary, out)
			return err
		})
		if handedOver {
			s.once.Do(func() { close(s.done) }) // the answer is out: this daemon may go
		}
	})
	return mux
}

func step(out io.Writer, format string, a ...any) {
	fmt.Fprintf(out, "-----> "+format+"\n", a...)
}

// notifySystemd sends state to systemd's notify socket, if it gave one.
func (s *Server) notifySystemd(state string) {
	if err := systemd.Notify(state); err != nil {
		s.log.Warn("systemd notify", "err", err)
	}
}

// watchdog pings systemd at half its WatchdogSec until the server is done.
func (s *Server) watchdog() {
	every, ok := systemd.WatchdogInterval()
	if !ok {
		return
	}
	t := time.NewTicker(every / 2)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.notifySystemd(systemd.Watchdog)
		}
	}
}

// statusLine is systemd's STATUS=: the live release of each app.
func (s *Server) statusLine() string {
	d, _ := s.daemon()
	var parts []string
	for _, st := range d.Status() {
		live := st.Live
		if live == "" {
			live = "nothing live"
		}
		parts = append(parts, st.App+" "+live)
	}
	if len(parts) == 0 {
		return systemd.Status("no apps")
	}
	return systemd.Status(strings.Join(parts, ", "))
}
