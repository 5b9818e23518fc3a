package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/deployer/deployer/admin"
	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/releases"
)

// serveAdmin starts the admin server (http_admin) on the listener open()
// got, if any. Called with s.mu held.
func (s *Server) serveAdmin() {
	if s.adminLn == nil {
		return
	}
	h := &admin.Handler{Metrics: s.metrics, Serving: s.serving, Page: s.page, Log: s.log, AuthDelay: 300 * time.Millisecond}
	h.Configure(s.cfg.HTTPAdmin)
	s.adminHandler, s.admin = h, h.Server()
	// The page's live streams never end on their own: end them when the
	// server shuts down (a stop, or a handover to a new daemon, which the
	// browsers then reconnect to).
	s.admin.RegisterOnShutdown(s.page.EndStreams)
	go func(srv *http.Server) {
		if err := srv.Serve(s.adminLn); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin http", "err", err)
		}
	}(s.admin)
	if s.cfg.HTTPAdmin.TokensFile == "" {
		s.log.Warn("http_admin.tokens_file is not set: only /metrics and /healthz answer on the admin listener, not the status page")
	}
}

// stopAdmin stops the admin server, if any: the requests in flight get a
// few seconds, then their connections are closed (a scrape is short; the
// status page's live streams are ended by Shutdown, RegisterOnShutdown).
func stopAdmin(srv *http.Server) {
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if srv.Shutdown(ctx) != nil {
		srv.Close()
	}
}

// reconfigureAdmin applies a config reload to the admin server: its auth
// settings at once. The listener stays as it is: a new or changed
// http_admin.listen takes effect at the next start or upgrade.
func (s *Server) reconfigureAdmin(prev, next config.HTTPAdmin) {
	s.mu.Lock()
	h := s.adminHandler
	s.mu.Unlock()
	if h != nil {
		h.Configure(next)
	}
	if next.Listen != prev.Listen {
		s.log.Warn("http_admin.listen changed: the admin listener stays as it is until the daemon restarts or upgrades",
			"listen", prev.Listen, "configured", next.Listen)
	}
}

// serving says whether the daemon serves, for /healthz: its apps are up
// (or adopted) and it is not stopping.
func (s *Server) serving() bool {
	if s.stopping.Load() {
		return false
	}
	_, ready := s.daemon()
	select {
	case <-ready:
		return true
	default:
		return false
	}
}

// onEvent is told of every ledger event (deployer.Options.OnEvent) and
// tells the metrics and the status page. Neither blocks.
func (s *Server) onEvent(app string, e releases.Event) {
	s.metrics.Observe(app, e)
	s.page.Notify(app, e)
}

// currentDaemon is the admin listener's view of the daemon, for the
// metrics and the status page: whichever deployer.Daemon serves now (a
// failed upgrade replaces it).
type currentDaemon struct{ s *Server }

func (c currentDaemon) Status() []deployer.Status {
	d, _ := c.s.daemon()
	if d == nil {
		return nil
	}
	return d.Status()
}

func (c currentDaemon) Releases(app string) ([]*releases.Release, string, error) {
	d, _ := c.s.daemon()
	if d == nil {
		return nil, "", deployer.ErrUnknownApp
	}
	return d.Releases(app)
}

func (c currentDaemon) ReleasesDir(app string) (string, error) {
	d, _ := c.s.daemon()
	if d == nil {
		return "", deployer.ErrUnknownApp
	}
	return d.ReleasesDir(app)
}

func (c currentDaemon) History(app string) ([]releases.Event, error) {
	d, _ := c.s.daemon()
	if d == nil {
		return nil, deployer.ErrUnknownApp
	}
	return d.History(app)
}

func (c currentDaemon) Logs(ctx context.Context, app, build string, lines int, follow bool, out io.Writer) error {
	d, _ := c.s.daemon()
	if d == nil {
		return deployer.ErrUnknownApp
	}
	return d.Logs(ctx, app, build, lines, follow, out)
}

func (c currentDaemon) Rollback(ctx context.Context, app, to, by string, out io.Writer) error {
	d, _ := c.s.daemon()
	if d == nil {
		return deployer.ErrUnknownApp
	}
	return d.Rollback(ctx, app, to, by, out)
}
