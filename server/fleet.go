package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
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
		control.Reply(w, s.fleetClient().Gather(ctx, s.fleetSelf(d), s.fleetPeers()), nil)
	}
}

// fleetPeerAPI is what this daemon serves its peers, behind fleet.Guard:
// its state, and a rollback of one of its apps, streamed as on the control
// socket.
func (s *Server) fleetPeerAPI(d *deployer.Daemon) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+fleet.StatusPath, func(w http.ResponseWriter, _ *http.Request) {
		control.Reply(w, s.fleetSelf(d), nil)
	})
	mux.HandleFunc("POST /_fleet/v1/apps/{app}/rollback", func(w http.ResponseWriter, r *http.Request) {
		var req control.RollbackRequest
		if control.Decode(w, r, &req) {
			control.Stream(w, func(out io.Writer) error { return d.Rollback(r.Context(), r.PathValue("app"), req.To, req.By, out) })
		}
	})
	return mux
}

func (s *Server) fleetClient() *fleet.Client {
	s.mu.Lock()
	f := s.cfg.Fleet
	s.mu.Unlock()
	token, _ := f.Token()
	return &fleet.Client{Token: token}
}

// peerRollback rolls app back on peer p, its output to out.
func (s *Server) peerRollback(ctx context.Context, p fleet.Peer, app, to, by string, out io.Writer) error {
	body, _ := json.Marshal(control.RollbackRequest{To: to, By: by})
	resp, err := s.fleetClient().Do(ctx, &http.Client{}, http.MethodPost, p.URL, "/_fleet/v1/apps/"+app+"/rollback", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return control.ReadStream(resp.Body, out)
}

// prefixed writes each line to out as "host: line".
type prefixed struct {
	out  io.Writer
	host string
	buf  []byte
}

func (p *prefixed) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		fmt.Fprintf(p.out, "%s: %s\n", p.host, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
}

// fleetRollback rolls app back on every host, this one first, then the
// peers in batches of fleet.batch_size (fleet.pause between batches), all
// or nothing: every host must answer and have the app before anything
// changes, and if one fails, every host already switched is rolled back to
// the release it ran before, and the error names the host and why.
//
// Without to, each host goes back to its own previous good release. With
// to, every host goes to release to: ids agree across hosts once releases
// are shipped by a fleet rollout; until then, a host without that id fails
// the rollback, and the others are put back.
func (s *Server) fleetRollback(ctx context.Context, d *deployer.Daemon, app, to, by string, out io.Writer) error {
	peers := s.fleetPeers()
	s.mu.Lock()
	batch, pause := s.cfg.Fleet.BatchSize, s.cfg.Fleet.Pause
	s.mu.Unlock()
	self := s.fleetSelf(d)
	res := s.fleetClient().Gather(ctx, self, peers)
	before := map[string]string{}
	var problems []string
	for _, r := range res {
		if r.State == nil {
			problems = append(problems, fmt.Sprintf("%s: %s", r.Host, r.Error))
			continue
		}
		found := false
		for _, a := range r.State.Apps {
			if a.App == app {
				found, before[r.Host] = true, a.Live
			}
		}
		if !found {
			problems = append(problems, fmt.Sprintf("%s: no app %q", r.Host, app))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("fleet rollback refused, nothing changed: %s", strings.Join(problems, "; "))
	}
	step(out, "Fleet rollback of %s: %s first, then %d peer(s) in batches of %d", app, self.Name, len(peers), batch)
	var switched []fleet.Peer // the peers switched, in order
	undo := func(why error) error {
		step(out, "Fleet rollback stopped: %v; putting back the hosts already switched", why)
		var errs []error
		for i := len(switched) - 1; i >= 0; i-- {
			p := switched[i]
			if err := s.peerRollback(context.WithoutCancel(ctx), p, app, before[p.Name], by, &prefixed{out: out, host: p.Name}); err != nil {
				errs = append(errs, fmt.Errorf("%s stays on the new release: %w", p.Name, err))
			}
		}
		if err := d.Rollback(context.WithoutCancel(ctx), app, before[self.Name], by, &prefixed{out: out, host: self.Name}); err != nil {
			errs = append(errs, fmt.Errorf("%s stays on the new release: %w", self.Name, err))
		}
		return errors.Join(append([]error{why}, errs...)...)
	}
	if err := d.Rollback(ctx, app, to, by, &prefixed{out: out, host: self.Name}); err != nil {
		return fmt.Errorf("fleet rollback refused at %s, nothing changed: %w", self.Name, err)
	}
	for i := 0; i < len(peers); i += batch {
		if i > 0 && pause > 0 {
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return undo(ctx.Err())
			}
		}
		for _, p := range peers[i:min(i+batch, len(peers))] {
			if err := s.peerRollback(ctx, p, app, to, by, &prefixed{out: out, host: p.Name}); err != nil {
				return undo(fmt.Errorf("%s: %w", p.Name, err))
			}
			switched = append(switched, p)
		}
	}
	step(out, "Fleet rollback of %s done on %d host(s)", app, len(peers)+1)
	return nil
}
