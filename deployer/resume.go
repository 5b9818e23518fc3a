package deployer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/deployer/deployer/releases"
)

// resume starts the pool of the current release, at daemon start (or when
// a config reload adds the app), in the app's turn.
func (a *App) resume(ctx context.Context) error {
	return a.do(ctx, &op{what: "daemon start", run: (*job).resume})
}

// resume adopts the live pool a previous daemon left running, if any;
// otherwise it starts one.
func (j *job) resume() error {
	cur, _ := j.store.Current()
	adopted := j.adopt(cur)
	j.repair()
	if adopted != nil {
		j.swap(adopted) // nothing was live
		return nil
	}
	id, err := j.store.Current()
	if errors.Is(err, releases.ErrNoCurrent) {
		j.log.Info("no live release yet: push to deploy", "branch", j.cfg.Branch, "listen", j.cfg.Listen)
		return nil
	}
	if err != nil {
		return err
	}
	rel, err := j.store.Get(id)
	if err != nil {
		return err
	}
	j.applyConfig(rel)
	if err := j.giveTree(rel); err != nil {
		return j.fallBack(rel, err)
	}
	pool, err := j.startPool(j.poolSpec(rel))
	if err != nil {
		return j.fallBack(rel, fmt.Errorf("start %s: %w", id, err))
	}
	j.swap(pool) // nothing was live
	j.log.Info("serving", "release", id, "revision", short(rel.Revision), "workers", rel.Workers)
	return nil
}

// fallBack, at daemon start, puts the previous good release live when the
// current one would not start, rather than leave the app with no worker.
func (j *job) fallBack(cur *releases.Release, why error) error {
	list, err := j.store.List()
	if err != nil {
		return why
	}
	prev := releases.PreviousGood(list, cur.ID)
	if prev == nil {
		return why
	}
	j.log.Error("the live release does not start; falling back", "release", cur.ID, "to", prev.ID, "err", why)
	ref, from := j.branchHead()
	if _, err := j.goLive(prev, cutover{ref: ref, from: from, to: prev.Revision, previous: cur.ID, retireAs: releases.RolledBack}); err != nil {
		return fmt.Errorf("%w; falling back to %s failed too: %w", why, prev.ID, err)
	}
	j.record(releases.Event{Event: "rollback", Release: prev.ID, From: cur.ID, By: "deployer",
		Detail: "the live release did not start: " + why.Error()})
	return nil
}

// repair brings the disk back to a consistent state after a crash: a
// release left building is marked failed and its tree removed, the current
// release is marked live, and the deploy branch names the live revision.
func (j *job) repair() {
	list, err := j.store.List()
	if err != nil {
		j.log.Error("repair", "err", err)
		return
	}
	cur, _ := j.store.Current()
	for _, rel := range list {
		switch {
		case rel.ID == cur && rel.Status != releases.Live:
			// current only ever names a release that passed green: a crash
			// after the switch but before its status was saved.
			rel.Status = releases.Live
		case rel.ID == cur:
			continue
		case rel.Status == releases.Building:
			rel.Status, rel.Reason = releases.Failed, "interrupted: the daemon stopped during the deploy"
			killProcessesIn(j.store.Dir(rel.ID))
			if err := os.RemoveAll(j.store.Dir(rel.ID)); err != nil {
				j.log.Error("repair: remove a half-built release", "release", rel.ID, "err", err)
			}
		case rel.Status == releases.Live:
			rel.Status = releases.Retired
		default:
			continue
		}
		if err := j.save(rel); err != nil {
			continue
		}
		j.log.Warn("recovered release state", "release", rel.ID, "status", rel.Status)
		j.record(releases.Event{Event: "recover", Release: rel.ID, By: "deployer", Detail: string(rel.Status)})
	}
	if cur != "" {
		j.repairBranch(cur)
	}
	j.repairFleet(list)
}

// repairFleet drops what a rollout that the crash cut short left: the
// pack of an outgoing shipment, and the refs that kept the revision of a
// release shipped from or to this host. At start no rollout runs here,
// and every shipped release that waited to go live was just failed.
func (j *job) repairFleet(list []*releases.Release) {
	if err := os.RemoveAll(filepath.Join(j.dir, "outgoing")); err != nil {
		j.log.Error("repair: remove an interrupted shipment", "err", err)
	}
	if j.bare == nil {
		return
	}
	for _, rel := range list {
		if err := j.bare.DeleteRef(context.WithoutCancel(j.ctx), shippedRef(rel.ID)); err != nil {
			j.log.Error("repair: remove a shipment's ref", "ref", shippedRef(rel.ID), "err", err)
		}
	}
}

// repairBranch moves the deploy branch back to the revision of live, the
// current release, if a crash left it elsewhere.
func (j *job) repairBranch(live string) {
	rel, err := j.store.Get(live)
	if err != nil {
		j.log.Error("repair", "release", live, "err", err)
		return
	}
	ref := branchRef(j.cfg.Branch)
	now, err := j.repo.Resolve(ref)
	if err != nil || now == rel.Revision {
		return
	}
	if err := j.repo.UpdateRef(context.WithoutCancel(j.ctx), ref, rel.Revision, now, "deployer: recover to live "+live); err != nil {
		j.log.Error("repair the deploy branch", "err", err)
		return
	}
	j.log.Warn("moved the deploy branch back to the live release", "release", live, "from", short(now))
}
