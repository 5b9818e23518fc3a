package server

import (
	"context"
	"net/http"
	"os"
	"time"

	"github.com/deployer/deployer/control"
	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/fleet"
	"github.com/deployer/deployer/internal/buildinfo"
)

// fleetSelf is what this daemon says of itself to its peers.
func (s *Server) fleetSelf(d *deployer.Daemon) fleet.Host {
	name := "this host"
	if host, err := os.Hostname(); err == nil {
		name = host
	}
	h := fleet.Host{Name: name, Version: buildinfo.Get().Version}
	for _, st := range d.Status() {
		a := fleet.App{App: st.App, Live: st.Live}
		if rels, _, err := d.Releases(st.App); err == nil {
			for _, r := range rels {
				a.Releases = append(a.Releases, fleet.Release{ID: r.ID, Revision: r.Revision, Status: string(r.Status)})
				if r.ID == st.Live {
					a.Revision = r.Revision
				}
			}
		}
		h.Apps = append(h.Apps, a)
	}
	return h
}

// fleetPeers are the peers of the running config.
func (s *Server) fleetPeers() []fleet.Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []fleet.Peer
	for _, p := range s.cfg.Fleet.Peers {
		out = append(out, fleet.Peer{Name: p.Name, URL: p.URL})
	}
	return out
}

// handleFleetStatus answers GET /v1/fleet/status on the control socket.
func (s *Server) handleFleetStatus(d *deployer.Daemon) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		token, _ := s.cfg.Fleet.Token()
		c := &fleet.Client{Token: token}
		control.Reply(w, c.Gather(ctx, s.fleetSelf(d), s.fleetPeers()), nil)
	}
}
