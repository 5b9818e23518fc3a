package deployer

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deployer/deployer/fleet"
	"github.com/deployer/deployer/internal/buildinfo"
	"github.com/deployer/deployer/releases"
	"github.com/dustin/go-humanize"
)

// Peers is how a deploy reaches the fleet's other hosts (SPEC §10). The
// daemon's server implements it over the fleet's authenticated HTTP(S).
// Peers are named as the config names them.
type Peers interface {
	// Plan is the fleet as configured now; no peers: this host alone.
	Plan() FleetPlan
	// Status is what each peer says of itself, in the plan's order; a
	// peer that does not answer has its error instead.
	Status(ctx context.Context) []fleet.Result
	// Upload sends the file at path as part p of shipment to peer,
	// resuming where the peer's copy ends.
	Upload(ctx context.Context, peer, app, shipment, path string, p fleet.Part) error
	// Unpack has peer make release m of app from the parts it received.
	Unpack(ctx context.Context, peer, app string, m fleet.Manifest, out io.Writer) error
	// GoLive has peer put the release it made live, through its health gate.
	GoLive(ctx context.Context, peer, app, id string, req fleet.GoLive, out io.Writer) error
	// Rollback has peer roll app back to release to.
	Rollback(ctx context.Context, peer, app, to, by string, out io.Writer) error
	// Abandon tells peer that release id will not go live there.
	Abandon(ctx context.Context, peer, app, id string, req fleet.Abandon) error
}

// FleetPlan is this host's fleet: its own name, its peers in rollout
// order, how many go live at a time, and the pause between batches.
type FleetPlan struct {
	Self      string
	Peers     []string
	BatchSize int
	Pause     time.Duration
}

// rollout is a push on its way across the fleet from this host, the entry
// host: it builds once, ships the release to every peer before anything
// switches, goes live here first, then on the peers batch by batch, and
// puts every switched host back if one fails.
type rollout struct {
	peers    Peers
	plan     FleetPlan
	lines    *fleet.Lines
	pr       *progress            // the rollout's own lines, unprefixed
	shipment string               // the uploads' id on every peer
	before   map[string]fleet.App // each peer's app, as the rollout found it
	free     map[string]uint64    // each peer's free space
	shipped  []string             // the peers that hold the release
	switched []string             // the peers on which it went live
	lost     []string             // the peers that stopped answering while they went live
}

// newRollout is the rollout of a deploy of a, or nil when this host has no
// peers.
func (a *App) newRollout(out io.Writer) *rollout {
	if a.opts.Peers == nil {
		return nil
	}
	plan := a.opts.Peers.Plan()
	if len(plan.Peers) == 0 {
		return nil
	}
	plan.BatchSize = max(plan.BatchSize, 1)
	lines := fleet.NewLines(out)
	return &rollout{peers: a.opts.Peers, plan: plan, lines: lines, pr: newProgress(lines), shipment: randomID()}
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// planRollout asks every peer whether it can take a release of the app
// before anything is built: it must answer, speak this host's protocol,
// have the app, on the same branch. It returns the lowest release number
// free on every host.
func (j *job) planRollout(ro *rollout) (int, error) {
	ro.pr.Step("Fleet rollout: %s first, then %s, %d at a time", ro.plan.Self, strings.Join(ro.plan.Peers, ", "), ro.plan.BatchSize)
	ctx, cancel := context.WithTimeout(j.ctx, 15*time.Second)
	defer cancel()
	ro.before, ro.free = map[string]fleet.App{}, map[string]uint64{}
	next := 0
	var problems []string
	for _, r := range ro.peers.Status(ctx) {
		app, problem := j.canTake(r)
		if problem != "" {
			problems = append(problems, r.Host+": "+problem)
			continue
		}
		ro.before[r.Host], ro.free[r.Host] = app, r.State.Free
		next = max(next, app.Next)
	}
	if len(problems) > 0 {
		return 0, fmt.Errorf("%w: %s; nothing changed on any host", ErrFleet, strings.Join(problems, "; "))
	}
	return next, nil
}

// canTake is the app as peer r has it, or why r cannot take a release of it.
func (j *job) canTake(r fleet.Result) (fleet.App, string) {
	switch {
	case r.State == nil:
		return fleet.App{}, "unreachable: " + r.Error
	case r.State.Protocol != fleet.Protocol:
		return fleet.App{}, fmt.Sprintf("runs deployer %s, which cannot take a shipped release from this one (%s): upgrade it", r.State.Version, buildinfo.Get().Version)
	}
	for _, a := range r.State.Apps {
		if a.App != j.cfg.Name {
			continue
		}
		if a.Branch != j.cfg.Branch {
			return a, fmt.Sprintf("deploys branch %q of %s, this host %q", a.Branch, j.cfg.Name, j.cfg.Branch)
		}
		return a, ""
	}
	return fleet.App{}, fmt.Sprintf("has no app %q configured", j.cfg.Name)
}

// ship packs rel's built tree once, and sends it with the git objects of
// its revision to every peer, which verifies the checksums and makes the
// release under the same id. Nothing goes live anywhere.
func (j *job) ship(ro *rollout, rel *releases.Release) error {
	t := time.Now()
	out := filepath.Join(j.dir, "outgoing")
	if err := os.RemoveAll(out); err != nil { // what an earlier rollout that died left
		return err
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(out)
	treePath := filepath.Join(out, fleet.PartTree)
	if err := packTree(j.ctx, j.store.Dir(rel.ID), treePath); err != nil {
		return err
	}
	tree, err := fleet.Describe(fleet.PartTree, treePath)
	if err != nil {
		return err
	}
	ref := "refs/deployer/fleet/" + rel.ID
	if err := j.bare.SetRef(j.ctx, ref, rel.Revision); err != nil {
		return err
	}
	defer j.bare.DeleteRef(context.WithoutCancel(j.ctx), ref)
	ro.pr.Step("Shipping %s to %d host(s): tree %s (sha256 %s), with the git objects of %s",
		rel.ID, len(ro.plan.Peers), humanize.IBytes(uint64(tree.Size)), tree.SHA256[:12], short(rel.Revision))
	m := fleet.Manifest{Shipment: ro.shipment, From: ro.plan.Self, ID: rel.ID, Revision: rel.Revision, Branch: rel.Branch,
		Pusher: rel.Pusher, Message: rel.Message, BuildSeconds: rel.BuildSeconds, Ref: ref, Tree: tree}
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, peer := range ro.plan.Peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := j.shipTo(ro, peer, m, treePath, filepath.Join(out, peer+".bundle"))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", peer, err))
			} else {
				ro.shipped = append(ro.shipped, peer)
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	ro.pr.Step("Shipped %s to every host (%s)", rel.ID, secs(time.Since(t)))
	return nil
}

// shipTo sends m to peer: the git bundle of what it lacks, then the tree,
// then has it make the release.
func (j *job) shipTo(ro *rollout, peer string, m fleet.Manifest, treePath, bundlePath string) error {
	had := ro.before[peer].Head
	if had != m.Revision {
		var have []string
		if had != "" && had != ZeroRev {
			if ok, err := j.bare.IsAncestor(had, m.Revision); err == nil && ok {
				have = append(have, had)
			}
		}
		if err := j.bare.Bundle(j.ctx, bundlePath, m.Ref, have); err != nil {
			return err
		}
		var err error
		if m.Bundle, err = fleet.Describe(fleet.PartBundle, bundlePath); err != nil {
			return err
		}
	}
	// Room for the upload and the tree it unpacks to, and some to spare.
	if need := uint64(2*(m.Tree.Size+m.Bundle.Size)) + 64<<20; ro.free[peer] < need {
		return fmt.Errorf("not enough disk space: %s free in its data_dir, %s needed", humanize.IBytes(ro.free[peer]), humanize.IBytes(need))
	}
	if m.Bundle.Name != "" {
		if err := ro.peers.Upload(j.ctx, peer, j.cfg.Name, ro.shipment, bundlePath, m.Bundle); err != nil {
			return fmt.Errorf("send the git objects: %w", err)
		}
	}
	if err := ro.peers.Upload(j.ctx, peer, j.cfg.Name, ro.shipment, treePath, m.Tree); err != nil {
		return fmt.Errorf("send the tree: %w", err)
	}
	return ro.peers.Unpack(j.ctx, peer, j.cfg.Name, m, ro.lines.Host(peer))
}

// packTree writes the tar of dir to path.
func packTree(ctx context.Context, dir, path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = releases.Pack(ctx, dir, w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pack the release: %w", err)
	}
	return nil
}

// rollOut puts rel live on the peers, batch by batch, once it is live
// here. If a host fails, every host switched goes back to what it ran,
// this one too, and the error reports each host.
func (j *job) rollOut(ro *rollout, rel *releases.Release, previous, by string) error {
	for i := 0; i < len(ro.plan.Peers); i += ro.plan.BatchSize {
		if err := j.pause(ro, rel); err != nil {
			return j.undoRollout(ro, rel, previous, by, err)
		}
		batch := ro.plan.Peers[i:min(i+ro.plan.BatchSize, len(ro.plan.Peers))]
		var mu sync.Mutex
		var errs []error
		var wg sync.WaitGroup
		for _, peer := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req := fleet.GoLive{By: by, Detail: fmt.Sprintf("%s %s (built on %s)", short(rel.Revision), rel.Message, ro.plan.Self),
					Head: cmp.Or(ro.before[peer].Head, ZeroRev)}
				err := ro.peers.GoLive(j.ctx, peer, j.cfg.Name, rel.ID, req, ro.lines.Host(peer))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case errors.Is(err, ErrPeerLost):
					ro.lost = append(ro.lost, peer)
					fallthrough
				case err != nil:
					errs = append(errs, fmt.Errorf("%s: %w", peer, err))
				default:
					ro.switched = append(ro.switched, peer)
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			return j.undoRollout(ro, rel, previous, by, errors.Join(errs...))
		}
	}
	ro.pr.Step("%s is live on all %d hosts: %s, %s", rel.ID, len(ro.plan.Peers)+1, ro.plan.Self, strings.Join(ro.plan.Peers, ", "))
	return nil
}

// pause waits fleet.pause before a batch, then checks that every host
// already switched still runs rel: a health.watch there may have rolled it
// back.
func (j *job) pause(ro *rollout, rel *releases.Release) error {
	if ro.plan.Pause <= 0 {
		return nil
	}
	ro.pr.Step("Pausing %s before the next batch", ro.plan.Pause)
	timer := time.NewTimer(ro.plan.Pause)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-j.ctx.Done():
		return context.Cause(j.ctx)
	}
	if len(ro.switched) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(j.ctx, 15*time.Second)
	defer cancel()
	for _, r := range ro.peers.Status(ctx) {
		if !slices.Contains(ro.switched, r.Host) {
			continue
		}
		app, problem := j.canTake(r)
		switch {
		case problem != "":
			return fmt.Errorf("%s: %s", r.Host, problem)
		case app.Live != rel.ID:
			return fmt.Errorf("%s: runs %s, not %s, after the pause (its health.watch rolled back?)", r.Host, orNone(app.Live), rel.ID)
		}
	}
	return nil
}

// undoRollout puts every host that switched to rel back on the release it
// ran before, peers first, then this host, and tells the peers that hold
// rel without running it that it will not go live. It returns the error
// the pusher sees: why the rollout stopped, and where each host stands.
func (j *job) undoRollout(ro *rollout, rel *releases.Release, previous, by string, why error) error {
	// Put back even if the rollout was cancelled: a half-switched fleet is
	// what cancelling must not leave.
	j.ctx = context.WithoutCancel(j.ctx)
	ro.pr.Step("Fleet rollout of %s stopped: %v", rel.ID, why)
	ro.pr.Info("putting back the hosts already switched")
	report := []string{}
	back := func(host, to string, err error) {
		switch {
		case to == "":
			report = append(report, fmt.Sprintf("%s stays on %s (nothing ran before)", host, rel.ID))
		case err != nil:
			report = append(report, fmt.Sprintf("%s stays on %s (%v)", host, rel.ID, err))
		default:
			report = append(report, fmt.Sprintf("%s back on %s", host, to))
		}
	}
	for i := len(ro.switched) - 1; i >= 0; i-- {
		peer := ro.switched[i]
		to := ro.before[peer].Live
		var err error
		if to != "" {
			err = ro.peers.Rollback(j.ctx, peer, j.cfg.Name, to, by, ro.lines.Host(peer))
		}
		back(peer, to, err)
	}
	j.abandonShipped(ro, rel, why)
	var err error
	if previous != "" {
		err = j.rollback(previous, by, fmt.Sprintf("fleet rollout of %s stopped: %v", rel.ID, why))
	}
	back(ro.plan.Self, previous, err)
	for _, peer := range ro.plan.Peers {
		switch {
		case slices.Contains(ro.lost, peer):
			report = append(report, fmt.Sprintf("%s may run %s: it stopped answering while it went live (see deployer status --fleet)", peer, rel.ID))
		case !slices.Contains(ro.switched, peer):
			report = append(report, fmt.Sprintf("%s never switched", peer))
		}
	}
	return &rolloutError{why: why, report: report, selfBack: previous != "" && err == nil}
}

// abandonShipped tells the peers that hold rel without running it that it
// will not go live: they mark it failed and drop its tree.
func (j *job) abandonShipped(ro *rollout, rel *releases.Release, why error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(j.ctx), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, peer := range ro.shipped {
		if slices.Contains(ro.switched, peer) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ro.peers.Abandon(ctx, peer, j.cfg.Name, rel.ID, fleet.Abandon{Shipment: ro.shipment, Why: why.Error()}); err != nil {
				j.log.Warn("fleet: could not abandon a shipped release; it is marked failed when its host restarts or takes the next shipment",
					"peer", peer, "release", rel.ID, "err", err)
			}
		}()
	}
	wg.Wait()
}

// rolloutError is why a rollout stopped and where it left each host.
type rolloutError struct {
	why      error
	report   []string
	selfBack bool // this host is back on its previous release
}

func (e *rolloutError) Error() string {
	return fmt.Sprintf("%v; %s", e.why, strings.Join(e.report, "; "))
}

func (e *rolloutError) Unwrap() error { return e.why }
