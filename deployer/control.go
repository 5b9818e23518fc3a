package deployer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/deployer/deployer/releases"
)

// The control API is JSON over HTTP on the daemon's unix socket, which only
// its owner may open. Long operations stream newline-delimited JSON
// messages: {"out": "..."} for progress, then one {"error": "..."} or
// {"ok": true}.
type message struct {
	Out   string `json:"out,omitempty"`
	OK    bool   `json:"ok,omitempty"`
	Error string `json:"error,omitempty"`
}

// ListenControl opens the control socket at path, owner-only.
func ListenControl(path string) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("control socket %s: longer than a unix socket path may be (%d bytes): use a shorter data_dir", path, maxSocketPath)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// maxSocketPath is the longest path a unix socket may have on Linux.
const maxSocketPath = 107

// Handler serves the control API.
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(d.Status())
	})
	mux.HandleFunc("POST /v1/apps/{app}/push", func(w http.ResponseWriter, r *http.Request) {
		var p Push
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, "bad push: "+err.Error(), http.StatusBadRequest)
			return
		}
		stream(w, func(out io.Writer) error { return d.Deploy(r.Context(), r.PathValue("app"), p, out) })
	})
	mux.HandleFunc("POST /v1/apps/{app}/deploy", func(w http.ResponseWriter, r *http.Request) {
		var req DeployRequest
		if decode(w, r, &req) {
			stream(w, func(out io.Writer) error { return d.DeployRev(r.Context(), r.PathValue("app"), req.Rev, req.By, out) })
		}
	})
	mux.HandleFunc("POST /v1/apps/{app}/rollback", func(w http.ResponseWriter, r *http.Request) {
		var req RollbackRequest
		if decode(w, r, &req) {
			stream(w, func(out io.Writer) error { return d.Rollback(r.Context(), r.PathValue("app"), req.To, req.By, out) })
		}
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		var req ReloadRequest
		if decode(w, r, &req) {
			stream(w, func(out io.Writer) error { return d.Reload(r.Context(), req.App, req.By, out) })
		}
	})
	mux.HandleFunc("POST /v1/apps/{app}/cleanup", func(w http.ResponseWriter, r *http.Request) {
		var req CleanupRequest
		if !decode(w, r, &req) {
			return
		}
		keep := -1
		if req.Keep != nil {
			keep = *req.Keep
		}
		res, err := d.Cleanup(r.Context(), r.PathValue("app"), keep, req.DryRun, req.By)
		reply(w, res, err)
	})
	mux.HandleFunc("POST /v1/apps/{app}/cancel", func(w http.ResponseWriter, r *http.Request) {
		var req CancelRequest
		if decode(w, r, &req) {
			what, err := d.Cancel(r.PathValue("app"), req.By)
			reply(w, CancelResult{Cancelled: what}, err)
		}
	})
	mux.HandleFunc("GET /v1/apps/{app}/logs", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		lines, _ := strconv.Atoi(q.Get("lines"))
		stream(w, func(out io.Writer) error {
			return d.Logs(r.Context(), r.PathValue("app"), q.Get("build"), lines, q.Get("follow") == "1", out)
		})
	})
	mux.HandleFunc("GET /v1/apps/{app}/releases", func(w http.ResponseWriter, r *http.Request) {
		list, live, err := d.Releases(r.PathValue("app"))
		reply(w, ReleaseList{Live: live, Releases: list}, err)
	})
	return mux
}

// Requests of the control API.
type (
	DeployRequest   struct{ Rev, By string }
	RollbackRequest struct{ To, By string }
	ReloadRequest   struct{ App, By string }
	CancelRequest   struct{ By string }
	// CancelResult says what was cancelled.
	CancelResult struct {
		Cancelled string `json:"cancelled"`
	}
	CleanupRequest struct {
		Keep   *int
		DryRun bool
		By     string
	}
)

// ReleaseList is the answer of GET /v1/apps/{app}/releases.
type ReleaseList struct {
	Live     string              `json:"live"`
	Releases []*releases.Release `json:"releases"`
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

// reply sends v as JSON, or err with a status that says whose fault it is.
func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrUnknownApp):
			code = http.StatusNotFound
		case errors.Is(err, ErrNothingToCancel):
			code = http.StatusConflict
		}
		http.Error(w, err.Error(), code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// stream runs op, sending what it writes as {"out"} messages and its result last.
func stream(w http.ResponseWriter, op func(io.Writer) error) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	rc := http.NewResponseController(w)
	sw := &messageWriter{enc: json.NewEncoder(w), flush: func() { _ = rc.Flush() }, deadline: func() {
		// A client that stops reading must not hold the operation's output forever.
		_ = rc.SetWriteDeadline(time.Now().Add(clientWriteTimeout))
	}}
	defer rc.SetWriteDeadline(time.Time{}) // the connection may serve another request
	err := op(sw)
	if err != nil {
		sw.send(message{Error: err.Error()})
		return
	}
	sw.send(message{OK: true})
}

type messageWriter struct {
	mu       sync.Mutex
	enc      *json.Encoder
	flush    func()
	deadline func()
}

// clientWriteTimeout bounds one write to a client of the control socket.
const clientWriteTimeout = 30 * time.Second

func (m *messageWriter) Write(b []byte) (int, error) {
	if err := m.send(message{Out: string(b)}); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (m *messageWriter) send(msg message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.deadline()
	if err := m.enc.Encode(msg); err != nil {
		return err
	}
	m.flush()
	return nil
}
