package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

// Push is a request to deploy a revision pushed to the deploy branch.
type Push struct {
	Ref    string `json:"ref"` // refs/heads/BRANCH
	Old    string `json:"old"` // the branch's value the pusher saw; ZeroRev if new
	New    string `json:"new"`
	Pusher string `json:"pusher"`
	// Received is how long the pack took to arrive, for the summary.
	Received time.Duration `json:"received"`
	// Local deploys on this host alone, even in a fleet (deployer deploy
	// without --fleet). A push rolls out to the whole fleet.
	Local bool `json:"local,omitempty"`
}

// deploy runs one deploy of p in the app's turn, writing progress to out.
// In a fleet, this host's lines are prefixed with its name, as each
// peer's are.
func (a *App) deploy(wait context.Context, p Push, out io.Writer) error {
	var ro *rollout
	if !p.Local {
		ro = a.newRollout(out)
	}
	pr := newProgress(out)
	if ro != nil {
		pr = newProgress(ro.lines.Host(ro.plan.Self))
	}
	return a.do(wait, &op{
		what:       fmt.Sprintf("deploy of %s pushed by %s", short(p.New), p.Pusher),
		cancelable: true, pr: pr,
		run: func(j *job) error { return j.deploy(p, ro) },
	})
}

// buildTimes are the durations of a deploy's steps before it goes live; 0
// for a step that did not run.
type buildTimes struct{ checkout, build time.Duration }

// phases are the durations of the steps that ran, for the ledger:
// receive, and checkout and build once they began (a step that failed
// counts until it failed).
func (bt buildTimes) phases(received time.Duration) map[string]float64 {
	p := map[string]float64{"receive": received.Seconds()}
	if bt.checkout > 0 {
		p["checkout"] = bt.checkout.Seconds()
	}
	if bt.build > 0 {
		p["build"] = bt.build.Seconds()
	}
	return p
}

// deploy is a deploy at work; ro, if set, rolls it out to the fleet.
func (j *job) deploy(p Push, ro *rollout) error {
	start := time.Now()
	commit, err := j.repo.Commit(p.New)
	if err != nil {
		return err
	}
	if p.Old, err = j.checkBase(p); err != nil {
		return err
	}
	rel := &releases.Release{Revision: p.New, Branch: j.cfg.Branch, Pusher: p.Pusher, Message: commit.Subject}
	if ro != nil {
		if rel.Number, err = j.planRollout(ro); err != nil {
			return err
		}
	}
	j.applyConfig(rel)
	if err := j.store.Create(rel); err != nil {
		return err
	}
	logFile, err := os.Create(j.store.BuildLog(rel.ID))
	if err != nil {
		return j.failed(rel, "build log", err, nil)
	}
	defer logFile.Close()
	j.pr.setLog(logFile)
	defer j.pr.setLog(io.Discard)
	previous, _ := j.store.Current()
	j.pr.Step("Deploying %s (%s) as %s, pushed by %s: %s", j.cfg.Branch, short(p.New), rel.ID, p.Pusher, rel.Message)
	bt, step, err := j.build(rel, commit, previous)
	phases := bt.phases(p.Received)
	if err != nil {
		return j.failed(rel, step, err, phases)
	}
	if ro != nil {
		t := time.Now()
		err := j.ship(ro, rel)
		phases["ship"] = time.Since(t).Seconds()
		if err != nil {
			j.abandonShipped(ro, rel, err)
			return j.failed(rel, "fleet", fmt.Errorf("%w; nothing changed on any host", err), phases)
		}
	}
	lt, err := j.goLive(rel, cutover{
		ref: p.Ref, from: p.Old, to: p.New, previous: previous, retireAs: releases.Retired,
		event: &releases.Event{Event: "deploy", Release: rel.ID, From: previous, By: p.Pusher,
			Detail: fmt.Sprintf("%s %s", short(p.New), rel.Message), Phases: phases},
		since: start,
	})
	if err != nil {
		if ro != nil {
			j.abandonShipped(ro, rel, fmt.Errorf("%s failed at %s: %w", ro.plan.Self, lt.step, err))
		}
		lt.addPhases(phases)
		return j.failed(rel, lt.step, err, phases)
	}
	if ro != nil {
		if err := j.rollOut(ro, rel, previous, p.Pusher); err != nil {
			var re *rolloutError
			if errors.As(err, &re) && !re.selfBack {
				return err // still live here: not to be marked failed
			}
			return j.failed(rel, "fleet", err, nil) // went live here: its phases are in the deploy event
		}
	}
	total := time.Since(start)
	j.pr.Step("Deployed %s in %s (receive %s, checkout %s, build %s, preflight %s, green %s, swap %s)",
		rel.ID, secs(total+p.Received), secs(p.Received), secs(bt.checkout), secs(bt.build), secs(lt.preflight),
		secs(lt.green), secs(lt.swap))
	if err := j.hook(j.ctx, "post_deploy", j.cfg.Hooks.PostDeploy, j.store.Dir(rel.ID), j.buildEnv(rel, previous)); err != nil {
		j.pr.Info("post_deploy failed (%v); %s stays live", err, rel.ID)
		j.log.Warn("post_deploy hook failed", "release", rel.ID, "err", err)
	}
	j.startWatch(rel, previous)
	j.log.Info("deployed", "release", rel.ID, "revision", short(p.New), "by", p.Pusher, "seconds", total.Seconds())
	return nil
}

// build checks out rel, links the shared paths, runs the build and its
// hooks, and says at which step it failed.
func (j *job) build(rel *releases.Release, commit Commit, previous string) (bt buildTimes, step string, err error) {
	t := time.Now()
	dir := j.store.Dir(rel.ID)
	if err := j.repo.Checkout(j.ctx, commit.Tree, dir, j.maxRelease); err != nil {
		bt.checkout = time.Since(t)
		return bt, "checkout", err
	}
	bt.checkout = time.Since(t)
	j.pr.Step("Checked out %s into releases/%s (%s)", short(rel.Revision), rel.ID, secs(bt.checkout))
	if rel.Start, err = j.startCommand(commit.Tree); err != nil {
		return bt, "start", err
	}
	if err := j.linkShared(dir); err != nil {
		return bt, "shared", err
	}
	if err := j.giveTree(rel); err != nil {
		return bt, "shared", err
	}
	env := j.buildEnv(rel, previous)
	t = time.Now()
	if err := j.hook(j.ctx, "pre_build", j.cfg.Hooks.PreBuild, dir, env); err != nil {
		bt.build = time.Since(t)
		return bt, "hooks.pre_build", err
	}
	if j.cfg.Build != "" {
		j.pr.Step("Building: %s", j.cfg.Build)
		if err := j.shell(j.ctx, "build", dir, j.cfg.Build, env); err != nil {
			bt.build = time.Since(t)
			return bt, "build", fmt.Errorf("%w: %w", ErrBuild, err)
		}
	}
	bt.build = time.Since(t)
	rel.BuildSeconds = bt.build.Seconds()
	j.pr.Step("Build done (%s)", secs(bt.build))
	if err := j.save(rel); err != nil {
		return bt, "save", err
	}
	if err := j.hook(j.ctx, "release", j.releaseCommand(commit.Tree), dir, env); err != nil {
		return bt, "hooks.release", err
	}
	return bt, "", nil
}

// checkBase returns the branch value the cut-over must replace. If another
// deploy moved the branch while this push waited for its turn, the push
// still deploys when it builds on what is live now (a fast-forward);
// otherwise it would silently undo that deploy, so it is refused.
func (j *job) checkBase(p Push) (string, error) {
	cur := head(j.repo, p.Ref)
	if cur == p.Old {
		return p.Old, nil
	}
	ok, err := j.repo.IsAncestor(cur, p.New)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%w: %s is now at %s, which %s does not contain; fetch, merge and push again",
			ErrRefMoved, j.cfg.Branch, short(cur), short(p.New))
	}
	return cur, nil
}

// unmade are the steps that make a release's tree: a failure there leaves
// a tree that is no release at all.
var unmade = map[string]bool{"build log": true, "checkout": true, "start": true, "shared": true, "unpack": true}

// failed records rel as failed at step, with the durations of the steps
// that ran (phases, may be nil), and returns the error the pusher sees.
func (j *job) failed(rel *releases.Release, step string, err error, phases map[string]float64) error {
	if by := cancelledBy(j.ctx); by != "" {
		err = fmt.Errorf("cancelled by %s: %w", by, err)
	}
	rel.Status = releases.Failed
	rel.Reason = fmt.Sprintf("%s: %v", step, err)
	serr := j.save(rel)
	j.pr.Step("Deploy of %s failed at %s: %v", rel.ID, step, err)
	j.explain(err)
	j.pr.Info("the live release is unchanged")
	if dir := j.store.Dir(rel.ID); j.cfg.Hooks.OnFailure != "" {
		if _, serr := os.Stat(dir); serr == nil {
			// A tree that failed before it was handed over (a checkout
			// cut short) is the app's user's for the hook to run in.
			if gerr := j.giveTree(rel); gerr != nil {
				j.log.Warn("failed release: tree not handed to the app's user", "release", rel.ID, "err", gerr)
			}
			previous, _ := j.store.Current()
			env := append(j.buildEnv(rel, previous), "DEPLOYER_FAILED_STEP="+step, "DEPLOYER_ERROR="+err.Error())
			// Not on the operation's context: a cancelled deploy still reports.
			if herr := j.hook(j.work, "on_failure", j.cfg.Hooks.OnFailure, dir, env); herr != nil {
				j.log.Warn("on_failure hook failed", "release", rel.ID, "err", herr)
			}
		}
	}
	// A tree that failed to be made (a checkout cut short, too large, a full
	// disk, no usable start command) is never run and may be what filled the disk: it goes, and
	// with the space back the failure can be recorded if that failed at
	// first. A tree that was made but failed later (build, health check) is
	// kept for inspection; retention keeps only the newest such one.
	if unmade[step] || serr != nil || errors.Is(err, syscall.ENOSPC) {
		if rerr := j.store.RemoveTree(rel.ID); rerr != nil {
			j.pr.Info("the tree of %s could not be removed: %v", rel.ID, rerr)
			j.log.Warn("failed release: tree not removed", "release", rel.ID, "err", rerr)
		}
	}
	if serr != nil {
		serr = j.save(rel)
	}
	if serr != nil {
		j.pr.Info("%s could not be marked failed: %v", rel.ID, serr)
	}
	j.record(releases.Event{Event: "failure", Of: "deploy", Release: rel.ID, By: rel.Pusher, Detail: rel.Reason, Phases: phases})
	j.log.Warn("deploy failed", "release", rel.ID, "step", step, "err", err)
	return fmt.Errorf("%s: %w", step, err)
}

// explainLines is how many of the preflight instance's last lines of
// output a failed deploy shows.
const explainLines = 10

// explain follows a failure's one-line reason with what to change, when the
// cause is recognised, and the last lines the release printed.
func (j *job) explain(err error) {
	var pe *supervisor.PreflightError
	if !errors.As(err, &pe) {
		return
	}
	if pe.Hint != "" {
		j.pr.Info("hint: %s", pe.Hint)
	}
	if out := pe.Output; len(out) > 0 {
		out = out[max(0, len(out)-explainLines):]
		j.pr.Info("its last %d lines of output (all of it: deployer logs %s):", len(out), j.name)
		for _, l := range out {
			j.pr.Info("| %s", l)
		}
	}
}
