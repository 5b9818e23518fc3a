package admin

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/hooks/gitserver"
)

// Handler serves the admin listener:
//
//	/metrics   Prometheus metrics (Metrics)
//	/healthz   200 "ok" once the daemon serves (Serving), else 503
//	/...       Page, the status page, if set; else 404
//
// Every request needs HTTP basic auth with a token of
// http_admin.tokens_file as the password (the user name is not checked,
// as for git), except /metrics and /healthz with metrics_public. Set the
// fields before it serves; Configure may change the auth settings while
// it serves (a config reload).
type Handler struct {
	Metrics *Metrics
	// Serving says whether the daemon serves: its apps are up and it is
	// not stopping.
	Serving func() bool
	// Page is mounted at / behind the same auth; nil: none yet.
	Page http.Handler
	Log  *slog.Logger
	// AuthDelay slows down each failed authentication.
	AuthDelay time.Duration

	settings atomic.Pointer[config.HTTPAdmin]
}

// Configure sets the auth settings of c (tokens_file, metrics_public); a
// Handler never configured refuses every request.
func (h *Handler) Configure(c config.HTTPAdmin) { h.settings.Store(&c) }

// Server is the http.Server for h. Its timeouts bound a client that sends
// nothing; none bounds a response, for the status page's live updates.
func (h *Handler) Server() *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
	}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var c config.HTTPAdmin
	if p := h.settings.Load(); p != nil {
		c = *p
	}
	open := c.MetricsPublic && (r.URL.Path == "/metrics" || r.URL.Path == "/healthz")
	if !open {
		user, ok := h.authenticate(w, r, c.TokensFile)
		if !ok {
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), userKey{}, user))
	}
	switch r.URL.Path {
	case "/metrics":
		h.Metrics.Handler().ServeHTTP(w, r)
	case "/healthz":
		h.healthz(w, r)
	default:
		if h.Page == nil {
			http.NotFound(w, r)
			return
		}
		h.Page.ServeHTTP(w, r)
	}
}

// authenticate checks the request's token against tokensFile as git's
// HTTP transport does, and answers 401 if it does not match.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request, tokensFile string) (string, bool) {
	_, token, hasAuth := r.BasicAuth()
	if user, ok := (gitserver.Tokens{File: tokensFile}).Check(token); ok {
		return user, true
	}
	if hasAuth || r.Header.Get("Authorization") != "" {
		h.Log.Warn("admin: authentication failed", "peer", r.RemoteAddr, "path", r.URL.Path)
		time.Sleep(h.AuthDelay) // slows down guessing; bounded and constant
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="deployer admin"`)
	http.Error(w, "authentication required: use a token of http_admin.tokens_file as the password", http.StatusUnauthorized)
	return "", false
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if h.Serving == nil || !h.Serving() {
		http.Error(w, "starting or stopping", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

type userKey struct{}

// User is the name of the token a request to Handler authenticated with;
// "" for a request let through by metrics_public.
func User(ctx context.Context) string {
	s, _ := ctx.Value(userKey{}).(string)
	return s
}
