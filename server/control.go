package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/internal/buildinfo"
	"github.com/deployer/deployer/internal/systemd"
)

// VersionInfo is the answer of GET /v1/version.
type VersionInfo = deployer.VersionInfo

// controlHandler is the control API of d plus the daemon's own endpoints:
// GET /v1/version and POST /v1/upgrade.
func (s *Server) controlHandler(d *deployer.Daemon) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", d.Handler())
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, _ *http.Request) {
		bi := buildinfo.Get()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(VersionInfo{Version: bi.Version, Commit: bi.Commit, GoVersion: bi.GoVersion,
			Started: s.started.UTC(), PID: os.Getpid()})
	})
	mux.HandleFunc("POST /v1/upgrade", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Binary string `json:"binary"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		out := newStream(w)
		handedOver, err := s.Upgrade(r.Context(), req.Binary, out)
		out.finish(err)
		if handedOver {
			s.once.Do(func() { close(s.done) }) // the answer is out: this daemon may go
		}
	})
	return mux
}

// stream writes the control API's newline-delimited JSON messages:
// {"out"} for progress, then {"error"} or {"ok"}.
type stream struct {
	mu  sync.Mutex
	w   http.ResponseWriter
	rc  *http.ResponseController
	enc *json.Encoder
}

func newStream(w http.ResponseWriter) *stream {
	w.Header().Set("Content-Type", "application/x-ndjson")
	return &stream{w: w, rc: http.NewResponseController(w), enc: json.NewEncoder(w)}
}

func (s *stream) send(m map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.enc.Encode(m)
	_ = s.rc.Flush()
}

func (s *stream) Write(b []byte) (int, error) {
	s.send(map[string]any{"out": string(b)})
	return len(b), nil
}

func (s *stream) finish(err error) {
	if err != nil {
		s.send(map[string]any{"error": err.Error()})
		return
	}
	s.send(map[string]any{"ok": true})
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
