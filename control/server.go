package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"

	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/releases"
)

// API is what the control API asks of the daemon; *deployer.Daemon has it.
type API interface {
	Status() []deployer.Status
	Deploy(ctx context.Context, app string, p deployer.Push, out io.Writer) error
	DeployRev(ctx context.Context, app, rev, by string, toFleet bool, out io.Writer) error
	Rollback(ctx context.Context, app, to, by string, out io.Writer) error
	Reload(ctx context.Context, app, by string, out io.Writer) error
	Cleanup(ctx context.Context, app string, keep int, dryRun bool, by string) (*deployer.CleanupResult, error)
	Cancel(app, by string) (string, error)
	Logs(ctx context.Context, app, build string, lines int, follow bool, out io.Writer) error
	Releases(app string) ([]*releases.Release, string, error)
}

var _ API = (*deployer.Daemon)(nil)

// ListenControl opens the control socket at path, owner-only, replacing a
// socket a previous daemon left behind.
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

// NewMux serves the control API of api. The caller may add routes of its
// own (GET /v1/version, POST /v1/upgrade are not served here); they should
// answer with Reply, Stream and Decode.
func NewMux(api API) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		Reply(w, api.Status(), nil)
	})
	mux.HandleFunc("POST /v1/apps/{app}/push", func(w http.ResponseWriter, r *http.Request) {
		var p deployer.Push
		if Decode(w, r, &p) {
			Stream(w, func(out io.Writer) error { return api.Deploy(r.Context(), r.PathValue("app"), p, out) })
		}
	})
	mux.HandleFunc("POST /v1/apps/{app}/deploy", func(w http.ResponseWriter, r *http.Request) {
		var req DeployRequest
		if Decode(w, r, &req) {
			Stream(w, func(out io.Writer) error {
				return api.DeployRev(r.Context(), r.PathValue("app"), req.Rev, Invoker(r, req.By), req.Fleet, out)
			})
		}
	})
	mux.HandleFunc("POST /v1/apps/{app}/rollback", func(w http.ResponseWriter, r *http.Request) {
		var req RollbackRequest
		if Decode(w, r, &req) {
			Stream(w, func(out io.Writer) error {
				return api.Rollback(r.Context(), r.PathValue("app"), req.To, Invoker(r, req.By), out)
			})
		}
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		var req ReloadRequest
		if Decode(w, r, &req) {
			Stream(w, func(out io.Writer) error { return api.Reload(r.Context(), req.App, Invoker(r, req.By), out) })
		}
	})
	mux.HandleFunc("POST /v1/apps/{app}/cleanup", func(w http.ResponseWriter, r *http.Request) {
		var req CleanupRequest
		if !Decode(w, r, &req) {
			return
		}
		keep := -1
		if req.Keep != nil {
			keep = *req.Keep
		}
		res, err := api.Cleanup(r.Context(), r.PathValue("app"), keep, req.DryRun, Invoker(r, req.By))
		Reply(w, res, err)
	})
	mux.HandleFunc("POST /v1/apps/{app}/cancel", func(w http.ResponseWriter, r *http.Request) {
		var req CancelRequest
		if Decode(w, r, &req) {
			what, err := api.Cancel(r.PathValue("app"), Invoker(r, req.By))
			Reply(w, CancelResult{Cancelled: what}, err)
		}
	})
	mux.HandleFunc("GET /v1/apps/{app}/logs", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		lines, _ := strconv.Atoi(q.Get("lines"))
		Stream(w, func(out io.Writer) error {
			return api.Logs(r.Context(), r.PathValue("app"), q.Get("build"), lines, q.Get("follow") == "1", out)
		})
	})
	mux.HandleFunc("GET /v1/apps/{app}/releases", func(w http.ResponseWriter, r *http.Request) {
		list, live, err := api.Releases(r.PathValue("app"))
		Reply(w, ReleaseList{Live: live, Releases: list}, err)
	})
	return mux
}
