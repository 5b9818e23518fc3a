package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	"github.com/deployer/deployer/fleet"
	"github.com/deployer/deployer/releases"
)

// A peer's side of a rollout: the entry host ships a release it built
// (Receive), then asks each peer in turn to put it live (GoLiveShipped),
// or tells it the rollout stopped (Abandon). Each is an operation in the
// app's turn, like a deploy: it never runs beside another on the same app.

// Receive makes release m of app from its parts, their checksums already
// verified: the git objects in bundle (nil: the host has the revision),
// and the built tree as a tar in tree. The release waits, not live, for
// GoLiveShipped.
func (d *Daemon) Receive(ctx context.Context, app string, m fleet.Manifest, tree, bundle *os.File, out io.Writer) error {
	return d.run(ctx, app, out, func(a *App, wait context.Context, w io.Writer) error {
		wait, cancel := peerWait(wait)
		defer cancel()
		return a.do(wait, &op{
			what: fmt.Sprintf("release %s shipped from %s", m.ID, m.From), cancelable: true, pr: newProgress(w),
			run: func(j *job) error { return j.receive(m, tree, bundle) },
		})
	})
}

// GoLiveShipped puts release id of app live: a release shipped here that
// waits for its turn in the rollout.
func (d *Daemon) GoLiveShipped(ctx context.Context, app, id string, req fleet.GoLive, out io.Writer) error {
	return d.run(ctx, app, out, func(a *App, wait context.Context, w io.Writer) error {
		wait, cancel := peerWait(wait)
		defer cancel()
		return a.do(wait, &op{
			what: fmt.Sprintf("rollout of %s by %s", id, req.By), cancelable: true, pr: newProgress(w),
			run: func(j *job) error { return j.goLiveShipped(id, req) },
		})
	})
}

// Abandon marks release id of app, shipped here, failed: its rollout
// stopped before it went live here. A release that is not waiting to go
// live (already live, or never received) is left alone.
func (d *Daemon) Abandon(ctx context.Context, app, id, why string) error {
	return d.run(ctx, app, io.Discard, func(a *App, wait context.Context, w io.Writer) error {
		return a.do(wait, &op{
			what: "abandon " + id,
			run:  func(j *job) error { return j.abandon(id, "its fleet rollout stopped: "+why) },
		})
	})
}

// peerTurnWait bounds how long a rollout's step waits for the app's turn
// on a peer. Two hosts that take pushes at once each hold their own turn
// while they ask the other: rather than wait for each other until
// git.lock_timeout, the later rollout fails soon and says why.
const peerTurnWait = 30 * time.Second

func peerWait(wait context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(wait, peerTurnWait,
		fmt.Errorf("%w on this host (waited %s for its deploy lock)", ErrLockTimeout, peerTurnWait))
}

// shippedRef is the ref that keeps a shipped release's revision while it
// waits to go live.
func shippedRef(id string) string { return "refs/deployer/fleet/" + id }

// revisionRE is a full object name, as git writes it (SHA-1 or SHA-256).
var revisionRE = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)

// checkManifest refuses a manifest no honest entry host sends, before
// anything is made of it: its id, revision and ref come from the network.
func (j *job) checkManifest(m fleet.Manifest) error {
	switch {
	case m.Branch != j.cfg.Branch:
		return fmt.Errorf("%w: the entry host deploys branch %q, this host %q", ErrFleet, m.Branch, j.cfg.Branch)
	case !validID(m.ID):
		return fmt.Errorf("%w: release id %q: %w", ErrFleet, m.ID, releases.ErrBadID)
	case m.Ref != shippedRef(m.ID):
		return fmt.Errorf("%w: the shipment's ref %q is not %s", ErrFleet, m.Ref, shippedRef(m.ID))
	case !revisionRE.MatchString(m.Revision):
		return fmt.Errorf("%w: revision %q is not a full commit id", ErrFleet, m.Revision)
	}
	// Taken: by a release of this host's own, or one shipped earlier, whose
	// ref must not move.
	if _, err := j.store.Get(m.ID); !errors.Is(err, releases.ErrNotFound) {
		return fmt.Errorf("%w: %s: %w", ErrFleet, m.ID, releases.ErrExists)
	}
	if _, err := os.Lstat(j.store.Dir(m.ID)); err == nil {
		return fmt.Errorf("%w: %s: %w", ErrFleet, m.ID, releases.ErrExists)
	}
	return nil
}

func validID(id string) bool {
	_, ok := releases.ParseID(id)
	return ok
}

func (j *job) receive(m fleet.Manifest, tree, bundle *os.File) (err error) {
	start := time.Now()
	if err := j.checkManifest(m); err != nil {
		return err
	}
	// From here on the shipment's ref is this shipment's: a release that
	// could not be made keeps none.
	defer func() {
		if err != nil {
			if derr := j.bare.DeleteRef(context.WithoutCancel(j.ctx), m.Ref); derr != nil {
				j.log.Warn("shipped release: ref not removed", "ref", m.Ref, "err", derr)
			}
		}
	}()
	if bundle != nil {
		if err := j.bare.FetchBundle(j.ctx, bundle.Name(), m.Ref); err != nil {
			return fmt.Errorf("the git objects: %w", err)
		}
		if got, err := j.bare.Resolve(m.Ref); err != nil || got != m.Revision {
			return fmt.Errorf("%w: the bundle names %s, not %s (%v)", ErrFleet, short(got), short(m.Revision), err)
		}
	} else if err := j.bare.SetRef(j.ctx, m.Ref, m.Revision); err != nil {
		return fmt.Errorf("this host does not have %s: %w", short(m.Revision), err)
	}
	commit, err := j.repo.Commit(m.Revision)
	if err != nil {
		return err
	}
	rel := &releases.Release{ID: m.ID, Revision: m.Revision, Branch: m.Branch, Pusher: m.Pusher,
		Message: m.Message, BuildSeconds: m.BuildSeconds, BuiltOn: m.From}
	j.applyConfig(rel)
	if rel.Start, err = j.startCommand(commit.Tree); err != nil {
		return err
	}
	if err := j.store.CreateExact(rel); err != nil {
		return err
	}
	dir := j.store.Dir(rel.ID)
	if err := releases.Unpack(j.ctx, tree, dir, j.maxRelease); err != nil {
		return j.failed(rel, "unpack", err, nil)
	}
	if err := j.linkShared(dir); err != nil {
		return j.failed(rel, "shared", err, nil)
	}
	if err := j.giveTree(rel); err != nil {
		return j.failed(rel, "shared", err, nil)
	}
	if err := os.WriteFile(j.store.BuildLog(rel.ID), fmt.Appendf(nil, "built on %s in %.1fs, shipped here: tree sha256 %s, %d bytes\n",
		m.From, m.BuildSeconds, m.Tree.SHA256, m.Tree.Size), 0o600); err != nil {
		j.log.Warn("shipped release: no build log", "release", rel.ID, "err", err)
	}
	// A release an earlier rollout shipped here and never put live will
	// not go live any more: its entry host died or gave up. Only a release
	// made counts as a later rollout: a shipment refused changes nothing.
	if list, err := j.store.List(); err == nil {
		for _, r := range list {
			if r.Status == releases.Building && r.BuiltOn != "" && r.ID != m.ID {
				j.abandon(r.ID, "a later rollout arrived before its own finished")
			}
		}
	}
	j.pr.Step("Received %s (%s, built on %s): checksums verified, unpacked in %s", rel.ID, short(rel.Revision), m.From, secs(time.Since(start)))
	j.log.Info("received a shipped release", "release", rel.ID, "from", m.From, "revision", short(rel.Revision))
	return nil
}

func (j *job) goLiveShipped(id string, req fleet.GoLive) error {
	start := time.Now()
	rel, err := j.store.Get(id)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotShipped, err)
	}
	if rel.Status != releases.Building || rel.BuiltOn == "" {
		return fmt.Errorf("%s: %w (it is %s)", id, ErrNotShipped, rel.Status)
	}
	previous, _ := j.store.Current()
	ref, from := j.branchHead()
	j.pr.Step("Going live with %s (%s: %s), built on %s", rel.ID, short(rel.Revision), rel.Message, rel.BuiltOn)
	lt, err := j.goLive(rel, cutover{
		ref: ref, from: from, to: rel.Revision, previous: previous, retireAs: releases.Retired,
		event: &releases.Event{Event: "deploy", Release: rel.ID, From: previous, By: req.By, Detail: req.Detail},
		since: start,
	})
	if err != nil {
		phases := map[string]float64{}
		lt.addPhases(phases)
		return j.failed(rel, lt.step, err, phases)
	}
	if err := j.bare.DeleteRef(context.WithoutCancel(j.ctx), shippedRef(id)); err != nil {
		j.log.Warn("shipped release: ref not removed", "ref", shippedRef(id), "err", err)
	}
	j.pr.Step("Deployed %s in %s (preflight %s, green %s, swap %s)", rel.ID, secs(time.Since(start)),
		secs(lt.preflight), secs(lt.green), secs(lt.swap))
	if err := j.hook(j.ctx, "post_deploy", j.cfg.Hooks.PostDeploy, j.store.Dir(rel.ID), j.buildEnv(rel, previous)); err != nil {
		j.pr.Info("post_deploy failed (%v); %s stays live", err, rel.ID)
		j.log.Warn("post_deploy hook failed", "release", rel.ID, "err", err)
	}
	j.startWatch(rel, previous)
	j.log.Info("deployed", "release", rel.ID, "revision", short(rel.Revision), "by", req.By, "built_on", rel.BuiltOn)
	return nil
}

func (j *job) abandon(id, why string) error {
	if !validID(id) {
		return fmt.Errorf("abandon %q: %w", id, releases.ErrBadID)
	}
	defer func() {
		if err := j.bare.DeleteRef(context.WithoutCancel(j.ctx), shippedRef(id)); err != nil {
			j.log.Warn("shipped release: ref not removed", "ref", shippedRef(id), "err", err)
		}
	}()
	rel, err := j.store.Get(id)
	if err != nil || rel.Status != releases.Building || rel.BuiltOn == "" {
		return nil
	}
	rel.Status, rel.Reason = releases.Failed, why
	if err := j.save(rel); err != nil {
		return err
	}
	if err := j.store.RemoveTree(id); err != nil {
		j.log.Warn("abandoned release: tree not removed", "release", id, "err", err)
	}
	j.record(releases.Event{Event: "failure", Of: "deploy", Release: id, By: rel.Pusher, Detail: why})
	j.log.Info("abandoned a shipped release", "release", id, "why", why)
	return nil
}
