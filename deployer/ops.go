package deployer

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/deployer/deployer/releases"
	"github.com/dustin/go-humanize"
	"github.com/go-git/go-git/v5/plumbing"
)

// rollback makes release to (default: the previous good release) live again
// through the health gate, with the start command, workers and env it ran
// with, and moves the deploy branch back to its revision. No rebuild.
func (a *App) rollback(wait context.Context, to, by string, out io.Writer) error {
	pr := newProgress(out)
	unlock, err := a.acquire(wait, pr, "rollback by "+by)
	if err != nil {
		return err
	}
	defer unlock()
	return a.rollbackLocked(pr, to, by, "")
}

// rollbackLocked is rollback under the deploy lock; why, if set, is
// recorded as the reason.
func (a *App) rollbackLocked(pr *progress, to, by, why string) error {
	// The work goes on if the client that asked for it leaves; only
	// deployer cancel or the daemon's shutdown stop it.
	ctx, done := a.beginOp()
	defer done()
	start := time.Now()
	live, err := a.store.Current()
	if err != nil {
		return fmt.Errorf("rollback: %w", ErrNotLive)
	}
	list, err := a.store.List()
	if err != nil {
		return err
	}
	var target *releases.Release
	if to == "" {
		if target = releases.PreviousGood(list, live); target == nil {
			return fmt.Errorf("rollback: %w: no release older than %s was live", ErrNoTarget, live)
		}
	} else {
		if !strings.HasPrefix(to, "v") {
			to = "v" + to
		}
		if target, err = a.store.Get(to); err != nil {
			return fmt.Errorf("rollback: %w", err)
		}
	}
	switch {
	case target.ID == live:
		return fmt.Errorf("rollback: %s is already live", target.ID)
	case target.Status == releases.Failed:
		return fmt.Errorf("rollback: %s failed (%s): pick a release that was live", target.ID, target.Reason)
	case target.Status == releases.Pruned || target.Status == releases.Building:
		return fmt.Errorf("rollback: %s is %s", target.ID, target.Status)
	}
	if _, err := os.Stat(a.store.Dir(target.ID)); err != nil {
		return fmt.Errorf("rollback: %s is not on disk: %w", target.ID, err)
	}
	ref := "refs/heads/" + a.cfg().Branch
	from, err := a.repo.Resolve(ref)
	if err != nil {
		from = ZeroRev
	}
	pr.Step("Rolling back %s from %s to %s (%s: %s), no rebuild", a.cfg().Name, live, target.ID, short(target.Revision), target.Message)
	times, err := a.goLive(ctx, pr, target, cutover{
		ref: ref, from: from, to: target.Revision, previous: live, retireAs: releases.RolledBack,
	})
	if err != nil {
		reason := fmt.Sprintf("rollback to %s refused at %s: %v", target.ID, times.step, err)
		pr.Step("%s", reason)
		pr.Info("%s is still live", live)
		_ = a.store.Record(releases.Event{Event: "failure", Release: target.ID, From: live, By: by, Detail: reason})
		return fmt.Errorf("%s: %w", times.step, err)
	}
	took := time.Since(start)
	pr.Step("Rolled back to %s in %s; %s now names %s", target.ID, secs(took), a.cfg().Branch, short(target.Revision))
	_ = a.store.Record(releases.Event{Event: "rollback", Release: target.ID, From: live, By: by, Seconds: took.Seconds(), Detail: why})
	a.log.Info("rolled back", "release", target.ID, "from", live, "by", by, "seconds", took.Seconds())
	return nil
}

// reload starts fresh workers of the live release with the app's current
// config (env, workers, start), through the same gate, and retires the old ones.
func (a *App) reload(wait context.Context, by string, out io.Writer) error {
	pr := newProgress(out)
	unlock, err := a.acquire(wait, pr, "reload by "+by)
	if err != nil {
		return err
	}
	defer unlock()
	return a.reloadLocked(pr, by)
}

// reloadLocked is reload under the deploy lock.
func (a *App) reloadLocked(pr *progress, by string) error {
	// The work goes on if the client that asked for it leaves; only
	// deployer cancel or the daemon's shutdown stop it.
	ctx, done := a.beginOp()
	defer done()
	start := time.Now()
	live, err := a.store.Current()
	if err != nil {
		return fmt.Errorf("reload: %w", ErrNotLive)
	}
	rel, err := a.store.Get(live)
	if err != nil {
		return err
	}
	a.applyConfig(rel)
	pr.Step("Reloading %s: fresh workers of %s", a.cfg().Name, live)
	times, err := a.goLive(ctx, pr, rel, cutover{previous: live})
	if err != nil {
		reason := fmt.Sprintf("reload of %s failed at %s: %v", live, times.step, err)
		pr.Step("%s; the old workers keep serving", reason)
		_ = a.store.Record(releases.Event{Event: "failure", Release: live, By: by, Detail: reason})
		return fmt.Errorf("%s: %w", times.step, err)
	}
	took := time.Since(start)
	_ = a.store.Record(releases.Event{Event: "reload", Release: live, By: by, Seconds: took.Seconds()})
	a.log.Info("reloaded", "release", live, "by", by, "seconds", took.Seconds())
	return nil
}

// deployRev builds and deploys rev (default: the deploy branch) from the
// app's repository, without a push.
func (a *App) deployRev(wait context.Context, rev, by string, out io.Writer) error {
	ref := "refs/heads/" + a.cfg().Branch
	if rev == "" {
		rev = a.cfg().Branch
	}
	hash, err := a.repo.ResolveRevision(rev)
	if err != nil {
		return err
	}
	cur, err := a.repo.Resolve(ref)
	if err != nil {
		cur = ZeroRev
	}
	return a.deploy(wait, Push{Ref: ref, Old: cur, New: hash, Pusher: by}, out)
}

// CleanupResult says what a cleanup removed or would remove.
type CleanupResult struct {
	Pruned []string          `json:"pruned"`
	Kept   []string          `json:"kept"`
	Why    map[string]string `json:"why"`
	Freed  int64             `json:"freed_bytes"`
	DryRun bool              `json:"dry_run"`
}

// cleanup prunes releases by the retention rules, under the deploy lock so
// it never runs while the app deploys. keep < 0 means the configured value.
func (a *App) cleanup(wait context.Context, keep int, dryRun bool, by string) (*CleanupResult, error) {
	unlock, err := a.acquire(wait, newProgress(nil), "cleanup by "+by)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if keep < 0 {
		keep = a.cfg().KeepReleases
	}
	list, err := a.store.List()
	if err != nil {
		return nil, err
	}
	live, _ := a.store.Current()
	busy := map[string]bool{}
	for _, p := range a.pools() {
		busy[p.Release()] = true
	}
	plan := releases.PlanCleanup(list, live, keep, busy)
	res := &CleanupResult{Why: plan.Why, DryRun: dryRun, Pruned: []string{}, Kept: []string{}}
	for _, r := range plan.Keep {
		res.Kept = append(res.Kept, r.ID)
	}
	for _, r := range plan.Prune {
		if !dryRun {
			freed, err := a.store.Prune(r)
			res.Freed += freed
			if err != nil {
				return res, err
			}
		}
		res.Pruned = append(res.Pruned, r.ID)
	}
	if !dryRun && len(res.Pruned) > 0 {
		detail := fmt.Sprintf("pruned %s, freed %s", strings.Join(res.Pruned, " "), humanize.IBytes(uint64(res.Freed)))
		_ = a.store.Record(releases.Event{Event: "cleanup", By: by, Detail: detail})
		a.log.Info("cleanup", "pruned", res.Pruned, "freed_bytes", res.Freed, "by", by)
	}
	return res, nil
}

// ResolveRevision turns a branch, tag or (short) commit id into a commit id.
func (r *Repo) ResolveRevision(rev string) (string, error) {
	repo, err := r.open()
	if err != nil {
		return "", err
	}
	h, err := repo.ResolveRevision(plumbing.Revision(rev))
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", rev, err)
	}
	return h.String(), nil
}

// beginOp starts the context of a deploy, rollback or reload, which the
// caller holds the lock for; deployer cancel ends it.
func (a *App) beginOp() (context.Context, func()) {
	ctx, cancel := context.WithCancel(a.work)
	a.mu.Lock()
	a.cancelOp, a.cancelBy = cancel, ""
	a.mu.Unlock()
	return ctx, func() {
		a.mu.Lock()
		a.cancelOp = nil
		a.mu.Unlock()
		cancel()
	}
}

// cancel stops the running deploy, rollback or reload of the app: green is
// stopped, blue keeps serving, the release is recorded as failed.
func (a *App) cancel(by string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cancelOp == nil {
		return "", ErrNothingToCancel
	}
	a.cancelBy = by
	a.cancelOp()
	a.holderMu.Lock()
	defer a.holderMu.Unlock()
	return a.holder, nil
}

// cancelled says who cancelled the running operation, "" if nobody did.
func (a *App) cancelled() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cancelBy
}
