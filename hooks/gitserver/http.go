package gitserver

import (
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"strings"
	"time"

	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/internal/pktline"
)

// Apps finds the app a repository URL names.
type Apps interface {
	App(name string) (*deployer.App, error)
}

// HTTP serves git's smart-HTTP protocol for every app:
// /APP.git/info/refs, /APP.git/git-upload-pack, /APP.git/git-receive-pack.
type HTTP struct {
	Apps    Apps
	Tokens  Tokens
	Socket  string // the daemon's control socket, for the hook
	HookDir string // core.hooksPath: holds proc-receive
	MaxPack int64  // receive.maxInputSize
	Log     *slog.Logger
	// AuthDelay slows down each failed authentication.
	AuthDelay time.Duration
	// Limits bound idle and stalled connections; serve on a Listener with
	// the same Limits for the connection cap.
	Limits Limits
}

// Server is the http.Server for h. Its own timeouts back up the Listener's
// timers: request headers must arrive within Limits.Handshake, and a
// keep-alive connection is closed after Limits.Idle.
func (h *HTTP) Server() *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: h.Limits.Handshake,
		IdleTimeout:       h.Limits.Idle,
		ConnContext:       withConn,
	}
}

var services = map[string]bool{"git-upload-pack": true, "git-receive-pack": true}

func (h *HTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		// A body the handler does not read (a refused request's) is read
		// and discarded after it returns, for keep-alive: bound that too.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(h.Limits.Stall))
		defer func() { _ = rc.SetReadDeadline(time.Now().Add(h.Limits.Stall)) }()
	}
	name, action, ok := splitPath(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	_, token, hasAuth := r.BasicAuth()
	pusher, authed := h.Tokens.Check(token)
	if !authed {
		// git asks without credentials first and sends them on the 401:
		// only a wrong credential is a failure worth logging and slowing.
		if hasAuth || r.Header.Get("Authorization") != "" {
			h.Log.Warn("git: authentication failed", "peer", r.RemoteAddr, "path", r.URL.Path)
			time.Sleep(h.AuthDelay) // slows down guessing; bounded and constant
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="deployer"`)
		http.Error(w, "authentication required: use a token from the tokens file as the password", http.StatusUnauthorized)
		return
	}
	defer Busy(r.Context())()
	app, err := h.Apps.App(name)
	if err != nil {
		http.Error(w, fmt.Sprintf("no app %q here", name), http.StatusNotFound)
		return
	}
	if reason := notAdmitted(app, pusher); reason != "" {
		h.Log.Warn("git: pusher not admitted", "app", name, "pusher", pusher, "peer", r.RemoteAddr)
		http.Error(w, reason, http.StatusForbidden) // git shows a text/plain body as "remote:" lines
		return
	}
	switch {
	case action == "info/refs" && r.Method == http.MethodGet:
		svc := r.URL.Query().Get("service")
		if !services[svc] {
			http.Error(w, "dumb HTTP is not supported: use a git client >= 1.6.6", http.StatusForbidden)
			return
		}
		h.infoRefs(w, r, app, svc, pusher)
	case services[action] && r.Method == http.MethodPost:
		h.rpc(w, r, app, action, pusher)
	default:
		http.NotFound(w, r)
	}
}

// splitPath turns "/hello.git/info/refs" into ("hello", "info/refs").
func splitPath(p string) (app, action string, ok bool) {
	p = strings.TrimPrefix(p, "/")
	for _, a := range []string{"info/refs", "git-upload-pack", "git-receive-pack"} {
		if rest, found := strings.CutSuffix(p, "/"+a); found {
			rest = strings.TrimSuffix(rest, ".git")
			if rest == "" || strings.Contains(rest, "/") {
				return "", "", false
			}
			return rest, a, true
		}
	}
	return "", "", false
}

// gitCmd is git running service for app over HTTP.
func (h *HTTP) gitCmd(r *http.Request, app *deployer.App, svc, pusher string, args ...string) *exec.Cmd {
	return gitCommand(r.Context(), gitSetup{Socket: h.Socket, HookDir: h.HookDir, MaxPack: h.MaxPack},
		app, svc, pusher, r.Header.Get("Git-Protocol"), args...)
}

func (h *HTTP) infoRefs(w http.ResponseWriter, r *http.Request, app *deployer.App, svc, pusher string) {
	cmd := h.gitCmd(r, app, svc, pusher, "--stateless-rpc", "--advertise-refs")
	out, err := cmd.Output()
	if err != nil {
		h.Log.Error("git: advertise refs", "app", app.Name(), "err", err)
		http.Error(w, "git failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-"+svc+"-advertisement")
	w.Header().Set("Cache-Control", "no-cache")
	if !strings.Contains(r.Header.Get("Git-Protocol"), "version=2") {
		pktline.Write(w, "# service="+svc+"\n")
		pktline.Flush(w)
	}
	w.Write(out)
}

func (h *HTTP) rpc(w http.ResponseWriter, r *http.Request, app *deployer.App, svc, pusher string) {
	rc := http.NewResponseController(w)
	stalling := &stallReader{r: r.Body, rc: rc, stall: h.Limits.Stall}
	body := io.Reader(stalling)
	if r.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, "bad gzip body", http.StatusBadRequest)
			return
		}
		defer gz.Close()
		body = gz
	}
	cmd := h.gitCmd(r, app, svc, pusher, "--stateless-rpc")
	cmd.Stdin = body
	w.Header().Set("Content-Type", "application/x-"+svc+"-result")
	w.Header().Set("Cache-Control", "no-cache")
	cmd.Stdout = drained(&flushWriter{w: w, rc: rc, stall: h.Limits.Stall})
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	defer rc.SetWriteDeadline(time.Time{}) // the connection may serve another request
	if err := cmd.Run(); err != nil {
		if stalling.stalled {
			h.Log.Warn("git: "+svc+": the client sent nothing for stall_timeout: cut", "app", app.Name(),
				"peer", r.RemoteAddr, "pusher", pusher, "stall_timeout", h.Limits.Stall)
			return
		}
		h.Log.Warn("git: "+svc, "app", app.Name(), "peer", r.RemoteAddr, "err", err, "stderr", strings.TrimSpace(stderr.String()))
		return
	}
	h.Log.Info("git: "+svc, "app", app.Name(), "pusher", pusher, "seconds", time.Since(start).Seconds())
}

// flushWriter sends each chunk at once, so "remote:" progress is live.
type flushWriter struct {
	w     io.Writer
	rc    *http.ResponseController
	stall time.Duration
}

func (f *flushWriter) Write(b []byte) (int, error) {
	// A client that stops reading must not pin git (and the deploy's output) forever.
	_ = f.rc.SetWriteDeadline(time.Now().Add(f.stall))
	n, err := f.w.Write(b)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}
