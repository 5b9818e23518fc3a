package deployer

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/deployer/deployer/releases"
	"github.com/dustin/go-humanize"
)

// rollback makes release to (default: the previous good release) live again
// through the health gate, with the start command, workers and env it ran
// with, and moves the deploy branch back to its revision. No rebuild.
func (a *App) rollback(wait context.Context, to, by string, out io.Writer) error {
	return a.do(wait, &op{
		what: "rollback by " + by, cancelable: true, pr: newProgress(out),
		run: func(j *job) error { return j.rollback(to, by, "") },
	})
}

// rollback is a rollback at work; why, if set, is recorded as the reason.
func (j *job) rollback(to, by, why string) error {
	start := time.Now()
	live, err := j.store.Current()
	if err != nil {
		return fmt.Errorf("rollback: %w", ErrNotLive)
	}
	target, err := j.rollbackTarget(live, to)
	if err != nil {
		return err
	}
	ref, from := j.branchHead()
	j.pr.Step("Rolling back %s from %s to %s (%s: %s), no rebuild", j.cfg.Name, live, target.ID, short(target.Revision), target.Message)
	// Back to an older release, the one replaced is rolled-back: no longer
	// a target for "the previous good one". Forward to a newer one (--to,
	// or a fleet rollback putting a host back), the one replaced did no
	// wrong: it is retired, as after a deploy.
	retireAs := releases.RolledBack
	if n, ok := releases.ParseID(live); ok && target.Number > n {
		retireAs = releases.Retired
	}
	times, err := j.goLive(target, cutover{
		ref: ref, from: from, to: target.Revision, previous: live, retireAs: retireAs,
		event: &releases.Event{Event: "rollback", Release: target.ID, From: live, By: by, Detail: why}, since: start,
	})
	if err != nil {
		reason := fmt.Sprintf("rollback to %s refused at %s: %v", target.ID, times.step, err)
		j.pr.Step("%s", reason)
		j.pr.Info("%s is still live", live)
		phases := map[string]float64{}
		times.addPhases(phases)
		j.record(releases.Event{Event: "failure", Of: "rollback", Release: target.ID, From: live, By: by, Detail: reason, Phases: phases})
		return fmt.Errorf("%s: %w", times.step, err)
	}
	took := time.Since(start)
	j.pr.Step("Rolled back to %s in %s; %s now names %s", target.ID, secs(took), j.cfg.Branch, short(target.Revision))
	j.log.Info("rolled back", "release", target.ID, "from", live, "by", by, "seconds", took.Seconds())
	return nil
}

// rollbackTarget is release to ("" : the previous good one before live), if
// it can go live again.
func (j *job) rollbackTarget(live, to string) (*releases.Release, error) {
	var target *releases.Release
	if to == "" {
		list, err := j.store.List()
		if err != nil {
			return nil, err
		}
		if target = releases.PreviousGood(list, live); target == nil {
			return nil, fmt.Errorf("rollback: %w: no release older than %s was live", ErrNoTarget, live)
		}
	} else {
		if !strings.HasPrefix(to, "v") {
			to = "v" + to
		}
		if n, ok := releases.ParseID(to); !ok || to != "v"+strconv.Itoa(n) {
			return nil, fmt.Errorf("rollback: %q is not a release id", to)
		}
		var err error
		if target, err = j.store.Get(to); err != nil {
			return nil, fmt.Errorf("rollback: %w", err)
		}
	}
	switch {
	case target.ID == live:
		return nil, fmt.Errorf("rollback: %s is already live", target.ID)
	case target.Status == releases.Failed:
		return nil, fmt.Errorf("rollback: %s failed (%s): pick a release that was live", target.ID, target.Reason)
	case target.Status == releases.Pruned || target.Status == releases.Building:
		return nil, fmt.Errorf("rollback: %s is %s", target.ID, target.Status)
	}
	if _, err := os.Stat(j.store.Dir(target.ID)); err != nil {
		return nil, fmt.Errorf("rollback: %s is not on disk: %w", target.ID, err)
	}
	return target, nil
}

// reload starts fresh workers of the live release with the app's current
// config (env, workers, start), through the same gate, and retires the old ones.
func (a *App) reload(wait context.Context, by string, out io.Writer) error {
	return a.do(wait, &op{
		what: "reload by " + by, cancelable: true, pr: newProgress(out),
		run: func(j *job) error { return j.reload(by) },
	})
}

// reload is a reload at work.
func (j *job) reload(by string) error {
	start := time.Now()
	live, err := j.store.Current()
	if err != nil {
		return fmt.Errorf("reload: %w", ErrNotLive)
	}
	rel, err := j.store.Get(live)
	if err != nil {
		return err
	}
	j.applyConfig(rel)
	j.pr.Step("Reloading %s: fresh workers of %s", j.cfg.Name, live)
	times, err := j.goLive(rel, cutover{previous: live,
		event: &releases.Event{Event: "reload", Release: live, By: by}, since: start})
	if err != nil {
		reason := fmt.Sprintf("reload of %s failed at %s: %v", live, times.step, err)
		j.pr.Step("%s; the old workers keep serving", reason)
		phases := map[string]float64{}
		times.addPhases(phases)
		j.record(releases.Event{Event: "failure", Of: "reload", Release: live, By: by, Detail: reason, Phases: phases})
		return fmt.Errorf("%s: %w", times.step, err)
	}
	took := time.Since(start)
	j.log.Info("reloaded", "release", live, "by", by, "seconds", took.Seconds())
	return nil
}

// deployRev builds and deploys rev (default: the deploy branch) from the
// app's repository, without a push: on this host alone, unless toFleet.
func (a *App) deployRev(wait context.Context, rev, by string, toFleet bool, out io.Writer) error {
	branch := a.settings().Branch
	ref := branchRef(branch)
	if rev == "" {
		rev = branch
		if _, err := a.repo.Resolve(ref); err != nil {
			// A first push that failed leaves no branch: its revision,
			// the last one pushed, is what "deploy it again" means.
			last, ok := a.lastPushed(branch)
			if !ok {
				return fmt.Errorf("%s has no revision to deploy yet: push one, or name it: deployer deploy %s REV", branch, a.name)
			}
			if out == nil {
				out = io.Discard
			}
			fmt.Fprintf(out, "-----> %s was never deployed; deploying the last revision pushed to it, %s (%s, %s)\n",
				branch, short(last.Revision), last.ID, last.Status)
			rev = last.Revision
		}
	}
	hash, err := a.repo.ResolveRevision(rev)
	if err != nil {
		return err
	}
	return a.deploy(wait, Push{Ref: ref, Old: head(a.repo, ref), New: hash, Pusher: by, Local: !toFleet}, out)
}

// lastPushed is the newest release of branch whose revision the
// repository still has.
func (a *App) lastPushed(branch string) (*releases.Release, bool) {
	list, err := a.store.List()
	if err != nil {
		return nil, false
	}
	for _, r := range list {
		if r.Branch != branch && r.Branch != "" {
			continue
		}
		if _, err := a.repo.ResolveRevision(r.Revision); err == nil {
			return r, true
		}
	}
	return nil, false
}

// CleanupResult says what a cleanup removed or would remove.
type CleanupResult struct {
	Pruned []string          `json:"pruned"`
	Kept   []string          `json:"kept"`
	Why    map[string]string `json:"why"`
	Freed  int64             `json:"freed_bytes"`
	DryRun bool              `json:"dry_run"`
}

// cleanup prunes releases by the retention rules, in the app's turn so it
// never runs while the app deploys. keep < 0 means the configured value.
func (a *App) cleanup(wait context.Context, keep int, dryRun bool, by string) (*CleanupResult, error) {
	var res *CleanupResult
	err := a.do(wait, &op{what: "cleanup by " + by, run: func(j *job) error {
		var err error
		res, err = j.cleanup(keep, dryRun, by)
		return err
	}})
	return res, err
}

func (j *job) cleanup(keep int, dryRun bool, by string) (*CleanupResult, error) {
	if keep < 0 {
		keep = j.cfg.KeepReleases
	}
	list, err := j.store.List()
	if err != nil {
		return nil, err
	}
	live, _ := j.store.Current()
	busy := map[string]bool{}
	for _, p := range j.pools() {
		busy[p.Release()] = true
	}
	plan := releases.PlanCleanup(list, live, keep, busy)
	res := &CleanupResult{Why: plan.Why, DryRun: dryRun, Pruned: []string{}, Kept: []string{}}
	for _, r := range plan.Keep {
		res.Kept = append(res.Kept, r.ID)
	}
	for _, r := range plan.Prune {
		if !dryRun {
			freed, err := j.store.Prune(r)
			res.Freed += freed
			if err != nil {
				return res, err
			}
		}
		res.Pruned = append(res.Pruned, r.ID)
	}
	if !dryRun && j.bare != nil {
		sweepQuarantines(j.bare, j.log)
	}
	if !dryRun && len(res.Pruned) > 0 {
		detail := fmt.Sprintf("pruned %s, freed %s", strings.Join(res.Pruned, " "), humanize.IBytes(uint64(res.Freed)))
		if err := j.record(releases.Event{Event: "cleanup", By: by, Detail: detail}); err != nil {
			return res, err
		}
		j.log.Info("cleanup", "pruned", res.Pruned, "freed_bytes", res.Freed, "by", by)
	}
	return res, nil
}
