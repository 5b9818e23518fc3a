package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/deployer/deployer/control"
	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/fleet"
	"github.com/deployer/deployer/internal/buildinfo"
)

// selfName is this host's name in the fleet: fleet.name, else the hostname.
func (s *Server) selfName() string {
	s.mu.Lock()
	name := s.cfg.Fleet.Name
	s.mu.Unlock()
	if name != "" {
		return name
	}
	if host, err := os.Hostname(); err == nil {
		return host
	}
	return "this host"
}

// fleetSelf is what this daemon says of itself to its peers.
func (s *Server) fleetSelf(d *deployer.Daemon) fleet.Host {
	h := fleet.Host{Name: s.selfName(), Version: buildinfo.Get().Version, Protocol: fleet.Protocol}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(s.cfg.DataDir, &fs); err == nil {
		h.Free = fs.Bavail * uint64(fs.Bsize)
	}
	for _, st := range d.Status() {
		a := fleet.App{App: st.App, Live: st.Live, Next: 1}
		if app, err := d.App(st.App); err == nil {
			a.Branch = app.Branch()
			a.Head, _ = app.Repo().Resolve("refs/heads/" + a.Branch)
		}
		if rels, _, err := d.Releases(st.App); err == nil {
			for _, r := range rels {
				a.Releases = append(a.Releases, fleet.Release{ID: r.ID, Revision: r.Revision, Status: string(r.Status)})
				if r.ID == st.Live {
					a.Revision = r.Revision
				}
				a.Next = max(a.Next, r.Number+1)
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
// its state; the parts of a release shipped to it, the release made of
// them, put live or abandoned; and a rollback of one of its apps. What
// runs an operation streams its output as the control socket does.
func (s *Server) fleetPeerAPI(d *deployer.Daemon) http.Handler {
	staging := s.staging(d)
	mux := http.NewServeMux()
	mux.Handle("/_fleet/v1/apps/{app}/incoming/", staging.Handler())
	mux.HandleFunc("POST /_fleet/v1/apps/{app}/releases", func(w http.ResponseWriter, r *http.Request) {
		var m fleet.Manifest
		if s.decodePeer(w, r, &m) {
			app := r.PathValue("app")
			control.Stream(w, func(out io.Writer) error {
				defer staging.Remove(app, m.Shipment)
				tree, bundle, err := openShipment(staging, app, m)
				if err == nil {
					defer tree.Close()
					if bundle != nil {
						defer bundle.Close()
					}
					err = d.Receive(r.Context(), app, m, tree, bundle, out)
				}
				return s.peerRefused(r, "shipment", m.ID, err, "from", m.From, "shipment", m.Shipment)
			})
		}
	})
	mux.HandleFunc("POST /_fleet/v1/apps/{app}/releases/{id}/golive", func(w http.ResponseWriter, r *http.Request) {
		var req fleet.GoLive
		if s.decodePeer(w, r, &req) {
			control.Stream(w, func(out io.Writer) error {
				err := d.GoLiveShipped(r.Context(), r.PathValue("app"), r.PathValue("id"), req, out)
				return s.peerRefused(r, "golive", r.PathValue("id"), err, "by", req.By)
			})
		}
	})
	mux.HandleFunc("POST /_fleet/v1/apps/{app}/releases/{id}/abandon", func(w http.ResponseWriter, r *http.Request) {
		var req fleet.Abandon
		if s.decodePeer(w, r, &req) {
			app := r.PathValue("app")
			if req.Shipment != "" {
				staging.Remove(app, req.Shipment)
			}
			err := d.Abandon(r.Context(), app, r.PathValue("id"), req.Why)
			control.Reply(w, struct{}{}, s.peerRefused(r, "abandon", r.PathValue("id"), err))
		}
	})
	mux.HandleFunc("GET "+fleet.StatusPath, func(w http.ResponseWriter, _ *http.Request) {
		control.Reply(w, s.fleetSelf(d), nil)
	})
	mux.HandleFunc("POST /_fleet/v1/apps/{app}/rollback", func(w http.ResponseWriter, r *http.Request) {
		var req control.RollbackRequest
		if s.decodePeer(w, r, &req) {
			control.Stream(w, func(out io.Writer) error {
				err := d.Rollback(r.Context(), r.PathValue("app"), req.To, req.By, out)
				return s.peerRefused(r, "rollback", req.To, err, "by", req.By)
			})
		}
	})
	return mux
}

// maxPeerRequest bounds the JSON body of a peer's request: a manifest is a
// few hundred bytes, and a body is decoded in memory.
const maxPeerRequest = 1 << 20

// decodePeer is control.Decode of a peer's request, its body bounded by
// maxPeerRequest; a refusal is logged.
func (s *Server) decodePeer(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxPeerRequest)
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		err = fmt.Errorf("%w: %v", control.ErrBadRequest, err)
		control.Reply(w, nil, s.peerRefused(r, "request", "", err))
		return false
	}
	return true
}

// peerRefused logs err, the failure of a peer's request, in one line that
// names the app, the operation, the release and the peer's address; it
// returns err.
func (s *Server) peerRefused(r *http.Request, what, release string, err error, attrs ...any) error {
	if err != nil {
		args := append([]any{"app", r.PathValue("app"), "release", release, "peer", r.RemoteAddr, "err", err}, attrs...)
		s.log.Warn("fleet: a peer's "+what+" failed", args...)
	}
	return err
}

// staging keeps the parts of releases shipped to this host, under each
// app's directory, until they are unpacked: a tree may hold up to
// git.max_release_size of files (and tar's headers), a bundle up to
// git.max_pack_size.
func (s *Server) staging(d *deployer.Daemon) *fleet.Staging {
	return &fleet.Staging{
		Dir: func(app string) (string, error) {
			if _, err := d.App(app); err != nil {
				return "", err
			}
			return filepath.Join(s.cfg.DataDir, "apps", app, "incoming"), nil
		},
		Limit: func(app, part string) int64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			if part == fleet.PartBundle {
				return int64(s.cfg.Git.MaxPackSize)
			}
			return 2*int64(s.cfg.Git.MaxReleaseSize) + 64<<20
		},
	}
}

// openShipment opens the parts of m, each checked against its size and
// checksum; bundle is nil when m has none.
func openShipment(st *fleet.Staging, app string, m fleet.Manifest) (tree, bundle *os.File, err error) {
	if m.Tree.Name != fleet.PartTree || (m.Bundle.Name != "" && m.Bundle.Name != fleet.PartBundle) {
		return nil, nil, fmt.Errorf("%w: bad part names in the manifest", control.ErrBadRequest)
	}
	if err := st.Sweep(app, time.Hour); err != nil {
		return nil, nil, err
	}
	if tree, err = st.Open(app, m.Shipment, m.Tree); err != nil {
		return nil, nil, err
	}
	if m.Bundle.Name != "" {
		if bundle, err = st.Open(app, m.Shipment, m.Bundle); err != nil {
			tree.Close()
			return nil, nil, err
		}
	}
	return tree, bundle, nil
}

// fleetToken is the fleet's secret as the config names it now, read anew
// each time (a SIGHUP may name another file, or the file may change); ""
// if there is none, which opens nothing.
func (s *Server) fleetToken() string {
	s.mu.Lock()
	f := s.cfg.Fleet
	s.mu.Unlock()
	token, _ := f.Token()
	return token
}

func (s *Server) fleetClient() *fleet.Client {
	s.mu.Lock()
	f := s.cfg.Fleet
	s.mu.Unlock()
	token, _ := f.Token()
	return &fleet.Client{Token: token, HTTP: &http.Client{Timeout: 5 * time.Second, Transport: s.fleetTransport(f.CAFile)}}
}

// fleetTransport is the transport to the peers: one, so that connections
// are reused, trusting the system's CAs and those of caFile. A caFile that
// cannot be read leaves the system's alone, and the error in the log.
func (s *Server) fleetTransport(caFile string) http.RoundTripper {
	s.transportMu.Lock()
	defer s.transportMu.Unlock()
	if s.transport != nil && s.transportCA == caFile {
		return s.transport
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// A peer killed with kill -9 leaves its listener to its descriptor
	// keeper: the kernel still accepts connections, and nothing answers.
	// Every request of the peer API answers its header at once (a
	// streamed operation before it starts), so a peer silent this long is
	// down, and a rollout does not wait for it forever.
	tr.ResponseHeaderTimeout = peerAnswerTimeout
	if caFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if pem, err := os.ReadFile(caFile); err != nil || !pool.AppendCertsFromPEM(pem) {
			s.log.Error("fleet.ca_file: no certificate read; trusting the system's CAs only", "file", caFile, "err", err)
		} else {
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
	}
	s.transport, s.transportCA = tr, caFile
	return tr
}

// peerAnswerTimeout bounds the wait for the header of a peer's answer.
const peerAnswerTimeout = 30 * time.Second

// peerRollback rolls app back on peer p, its output to out.
func (s *Server) peerRollback(ctx context.Context, p fleet.Peer, app, to, by string, out io.Writer) error {
	return s.peerStream(ctx, p.URL, "/_fleet/v1/apps/"+app+"/rollback", control.RollbackRequest{To: to, By: by}, out)
}

// peerStream posts req to path on the peer at url and copies the
// operation's output to out; it returns the operation's error.
func (s *Server) peerStream(ctx context.Context, url, path string, req any, out io.Writer) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	// No overall timeout: the operation runs a deploy.
	c := s.fleetClient()
	resp, err := c.Do(ctx, c.Unbounded(), http.MethodPost, url, path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return control.ReadStream(resp.Body, out)
}

// fleetPeers is the daemon's way to its peers (deployer.Peers).
type fleetPeers struct{ s *Server }

func (f fleetPeers) Plan() deployer.FleetPlan {
	f.s.mu.Lock()
	c := f.s.cfg.Fleet
	f.s.mu.Unlock()
	plan := deployer.FleetPlan{Self: f.s.selfName(), BatchSize: c.BatchSize, Pause: c.Pause}
	for _, p := range c.Peers {
		plan.Peers = append(plan.Peers, p.Name)
	}
	return plan
}

// url is the URL of peer name.
func (f fleetPeers) url(name string) (string, error) {
	for _, p := range f.s.fleetPeers() {
		if p.Name == name {
			return p.URL, nil
		}
	}
	return "", fmt.Errorf("%s is no longer a peer in the config", name)
}

func (f fleetPeers) Status(ctx context.Context) []fleet.Result {
	return f.s.fleetClient().Gather(ctx, fleet.Host{}, f.s.fleetPeers())[1:]
}

func (f fleetPeers) Upload(ctx context.Context, peer, app, shipment, path string, p fleet.Part) error {
	url, err := f.url(peer)
	if err != nil {
		return err
	}
	return f.s.fleetClient().Upload(ctx, url, app, shipment, path, p)
}

func (f fleetPeers) Unpack(ctx context.Context, peer, app string, m fleet.Manifest, out io.Writer) error {
	return f.stream(ctx, peer, "/_fleet/v1/apps/"+app+"/releases", m, out)
}

func (f fleetPeers) GoLive(ctx context.Context, peer, app, id string, req fleet.GoLive, out io.Writer) error {
	err := f.stream(ctx, peer, "/_fleet/v1/apps/"+app+"/releases/"+id+"/golive", req, out)
	var reported *control.Error
	if err != nil && !errors.As(err, &reported) && !errors.Is(err, syscall.ECONNREFUSED) {
		// Not the peer's answer: it may have gone live before its answer
		// was cut.
		return fmt.Errorf("%w: %w", deployer.ErrPeerLost, err)
	}
	return err
}

func (f fleetPeers) Rollback(ctx context.Context, peer, app, to, by string, out io.Writer) error {
	return f.stream(ctx, peer, "/_fleet/v1/apps/"+app+"/rollback", control.RollbackRequest{To: to, By: by}, out)
}

func (f fleetPeers) Abandon(ctx context.Context, peer, app, id string, req fleet.Abandon) error {
	url, err := f.url(peer)
	if err != nil {
		return err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	c := f.s.fleetClient()
	resp, err := c.Do(ctx, c.Unbounded(), http.MethodPost, url, "/_fleet/v1/apps/"+app+"/releases/"+id+"/abandon", bytes.NewReader(body))
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

func (f fleetPeers) stream(ctx context.Context, peer, path string, req any, out io.Writer) error {
	url, err := f.url(peer)
	if err != nil {
		return err
	}
	return f.s.peerStream(ctx, url, path, req, out)
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
	// With to, a host that already runs it is where the rollback takes it
	// (a split that a crashed rollout left): it is left alone, and only if
	// every host runs it is there nothing to do.
	if to != "" && !strings.HasPrefix(to, "v") {
		to = "v" + to
	}
	already := func(host string) bool { return to != "" && before[host] == to }
	if already(self.Name) && !slices.ContainsFunc(peers, func(p fleet.Peer) bool { return !already(p.Name) }) {
		return fmt.Errorf("fleet rollback: %s is already live on every host", to)
	}
	lines := fleet.NewLines(out)
	out = lines
	step(out, "Fleet rollback of %s: %s first, then %d peer(s) in batches of %d", app, self.Name, len(peers), batch)
	var switched []fleet.Peer // the peers switched, in order
	undo := func(why error) error {
		step(out, "Fleet rollback stopped: %v; putting back the hosts already switched", why)
		var errs []error
		for i := len(switched) - 1; i >= 0; i-- {
			p := switched[i]
			if err := s.peerRollback(context.WithoutCancel(ctx), p, app, before[p.Name], by, lines.Host(p.Name)); err != nil {
				errs = append(errs, fmt.Errorf("%s stays on the new release: %w", p.Name, err))
			}
		}
		if !already(self.Name) { // else it never switched
			if err := d.Rollback(context.WithoutCancel(ctx), app, before[self.Name], by, lines.Host(self.Name)); err != nil {
				errs = append(errs, fmt.Errorf("%s stays on the new release: %w", self.Name, err))
			}
		}
		return errors.Join(append([]error{why}, errs...)...)
	}
	if already(self.Name) {
		step(lines.Host(self.Name), "%s is live here already", to)
	} else if err := d.Rollback(ctx, app, to, by, lines.Host(self.Name)); err != nil {
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
			if already(p.Name) {
				step(lines.Host(p.Name), "%s is live there already", to)
				continue
			}
			if err := s.peerRollback(ctx, p, app, to, by, lines.Host(p.Name)); err != nil {
				return undo(fmt.Errorf("%s: %w", p.Name, err))
			}
			switched = append(switched, p)
		}
	}
	step(out, "Fleet rollback of %s done on %d host(s)", app, len(peers)+1)
	return nil
}
