package deployer

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
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
}

// deploy runs one deploy of p under the deploy lock, writing progress to out.
func (a *App) deploy(wait context.Context, p Push, out io.Writer) error {
	pr := newProgress(out)
	unlock, err := a.acquire(wait, pr, fmt.Sprintf("deploy of %s pushed by %s", short(p.New), p.Pusher))
	if err != nil {
		return err
	}
	defer unlock()
	// The work goes on if the client that asked for it leaves; only
	// deployer cancel or the daemon's shutdown stop it.
	ctx, done := a.beginOp()
	defer done()
	return a.deployLocked(ctx, p, pr)
}

func (a *App) deployLocked(ctx context.Context, p Push, pr *progress) error {
	start := time.Now()
	repo, commit, err := a.repo.Commit(p.New)
	if err != nil {
		return err
	}
	if p.Old, err = a.checkBase(p); err != nil {
		return err
	}
	rel := &releases.Release{
		Revision: p.New, Branch: a.cfg().Branch, Pusher: p.Pusher, Message: subject(commit),
	}
	a.applyConfig(rel)
	if err := a.store.Create(rel); err != nil {
		return err
	}
	logFile, err := os.Create(a.store.BuildLog(rel.ID))
	if err != nil {
		return a.failed(pr, rel, "build log", err)
	}
	defer logFile.Close()
	pr.setLog(logFile)
	defer pr.setLog(io.Discard)
	previous, _ := a.store.Current()
	pr.Step("Deploying %s (%s) as %s, pushed by %s: %s", a.cfg().Branch, short(p.New), rel.ID, p.Pusher, rel.Message)

	// Checkout.
	t := time.Now()
	dir := a.store.Dir(rel.ID)
	if err := releases.Checkout(repo.Storer, commit.TreeHash, dir); err != nil {
		return a.failed(pr, rel, "checkout", err)
	}
	checkout := time.Since(t)
	pr.Step("Checked out %s into releases/%s (%s)", short(p.New), rel.ID, secs(checkout))
	if rel.Start, err = a.startCommand(dir); err != nil {
		return a.failed(pr, rel, "start", err)
	}
	if err := a.linkShared(pr, dir); err != nil {
		return a.failed(pr, rel, "shared", err)
	}
	env := a.buildEnv(rel, previous)

	// Build, with its hooks.
	t = time.Now()
	if err := a.hook(ctx, pr, "pre_build", a.cfg().Hooks.PreBuild, dir, env); err != nil {
		return a.failed(pr, rel, "hooks.pre_build", err)
	}
	if a.cfg().Build != "" {
		pr.Step("Building: %s", a.cfg().Build)
		err := runShell(ctx, dir, a.cfg().Build, env, pr.indented(), a.cfg().BuildTimeout)
		if err != nil {
			return a.failed(pr, rel, "build", fmt.Errorf("%w: %w", ErrBuild, err))
		}
	}
	build := time.Since(t)
	rel.BuildSeconds = build.Seconds()
	pr.Step("Build done (%s)", secs(build))
	if err := a.store.Save(rel); err != nil {
		return a.failed(pr, rel, "save", err)
	}
	if err := a.hook(ctx, pr, "release", a.cfg().Hooks.Release, dir, env); err != nil {
		return a.failed(pr, rel, "hooks.release", err)
	}

	times, err := a.goLive(ctx, pr, rel, cutover{
		ref: p.Ref, from: p.Old, to: p.New, previous: previous, retireAs: releases.Retired,
	})
	if err != nil {
		return a.failed(pr, rel, times.step, err)
	}
	total := time.Since(start)
	pr.Step("Deployed %s in %s (receive %s, checkout %s, build %s, preflight %s, green %s, swap %s)",
		rel.ID, secs(total+p.Received), secs(p.Received), secs(checkout), secs(build), secs(times.preflight),
		secs(times.green), secs(times.swap))
	if err := a.hook(ctx, pr, "post_deploy", a.cfg().Hooks.PostDeploy, dir, env); err != nil {
		pr.Info("post_deploy failed (%v); %s stays live", err, rel.ID)
		a.log.Warn("post_deploy hook failed", "release", rel.ID, "err", err)
	}
	a.watch(pr, rel, previous)
	_ = a.store.Record(releases.Event{Event: "deploy", Release: rel.ID, From: previous, By: p.Pusher,
		Detail: fmt.Sprintf("%s %s", short(p.New), rel.Message), Seconds: total.Seconds()})
	a.log.Info("deployed", "release", rel.ID, "revision", short(p.New), "by", p.Pusher, "seconds", total.Seconds())
	return nil
}

// cutover says what going live changes besides the pool and current.
type cutover struct {
	ref      string          // the deploy branch; "" leaves it alone (reload)
	from, to string          // compare-and-swap of ref
	previous string          // the release live before, "" if none
	retireAs releases.Status // what previous becomes: retired, or rolled-back
}

// liveTimes are the durations of the steps of goLive, and the step it failed at.
type liveTimes struct {
	preflight, green, swap time.Duration
	step                   string
}

// goLive puts rel live through the health gate: preflight on a private
// socket, green on the shared sockets, then cut-over (branch, current, blue
// retired). On any failure green is stopped and nothing else has changed.
// The caller holds the deploy lock.
func (a *App) goLive(ctx context.Context, pr *progress, rel *releases.Release, c cutover) (liveTimes, error) {
	var lt liveTimes
	t := time.Now()
	spec := a.poolSpec(rel)
	if a.cfg().Health.Preflight {
		lt.step = "preflight"
		pr.Step("Preflight: one %s worker on a private socket, probing %s", rel.ID, a.probeName())
		if err := supervisor.Preflight(ctx, spec, a.probe(rel)); err != nil {
			return lt, err
		}
		pr.Step("Preflight passed (%s)", secs(time.Since(t)))
	}
	lt.preflight = time.Since(t)

	t = time.Now()
	lt.step = "green"
	pr.Step("Starting %d green workers of %s (each must stay up %s)", rel.Workers, rel.ID, a.cfg().Health.MinUptime)
	green := supervisor.NewPool(spec)
	a.setGreen(green) // status shows its workers as starting
	a.saveWorkers()
	if err := green.WaitUp(ctx, a.cfg().Health.Timeout); err != nil {
		a.setGreen(nil)
		a.saveWorkers()
		return lt, err
	}
	lt.green = time.Since(t)
	pr.Step("Green is up (%s)", secs(lt.green))

	// Cut-over: branch, then current, then blue retired.
	t = time.Now()
	lt.step = "cut-over"
	bg := context.WithoutCancel(ctx)
	if c.ref != "" {
		if err := a.repo.UpdateRef(bg, c.ref, c.to, c.from, "deployer: "+rel.ID+" live"); err != nil {
			a.stopGreen(green)
			return lt, err
		}
	}
	if err := a.store.SetCurrent(rel.ID); err != nil {
		if c.ref != "" {
			_ = a.repo.UpdateRef(bg, c.ref, c.from, c.to, "deployer: undo "+rel.ID)
		}
		a.stopGreen(green)
		return lt, err
	}
	// Record the new state before the drain, which may take drain_timeout.
	rel.Status = releases.Live
	if err := a.store.Save(rel); err != nil {
		a.log.Error("save live release", "release", rel.ID, "err", err)
	}
	if c.previous != "" && c.previous != rel.ID {
		if prev, err := a.store.Get(c.previous); err == nil && prev.Status == releases.Live {
			prev.Status = c.retireAs
			_ = a.store.Save(prev)
		}
	}
	a.endWatch()
	blue := a.livePool()
	a.mu.Lock()
	a.live, a.green = green, nil
	if blue != nil {
		a.draining = append(a.draining, blue)
	}
	a.mu.Unlock()
	a.saveWorkers()
	if blue != nil {
		blue.Stop()
		a.mu.Lock()
		a.draining = slices.DeleteFunc(a.draining, func(p *supervisor.Pool) bool { return p == blue })
		a.mu.Unlock()
		a.saveWorkers()
	}
	lt.swap = time.Since(t)
	lt.step = ""
	if c.previous == rel.ID {
		pr.Step("Cut-over: fresh workers of %s are live, the old ones retired (%s)", rel.ID, secs(lt.swap))
	} else {
		pr.Step("Cut-over: %s is live, %s %s (%s)", rel.ID, orNone(c.previous), c.retireAs, secs(lt.swap))
	}
	return lt, nil
}

// checkBase returns the branch value the cut-over must replace. If another
// deploy moved the branch while this push waited for the lock, the push still
// deploys when it builds on what is live now (a fast-forward); otherwise it
// would silently undo that deploy, so it is refused.
func (a *App) checkBase(p Push) (string, error) {
	cur, err := a.repo.Resolve(p.Ref)
	if err != nil {
		cur = ZeroRev
	}
	if cur == p.Old || cur == ZeroRev && p.Old == ZeroRev {
		return p.Old, nil
	}
	ok, err := a.repo.IsAncestor(cur, p.New)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%w: %s is now at %s, which %s does not contain; fetch, merge and push again",
			ErrRefMoved, a.cfg().Branch, short(cur), short(p.New))
	}
	return cur, nil
}

// failed records rel as failed at step and returns the error the pusher sees.
func (a *App) failed(pr *progress, rel *releases.Release, step string, err error) error {
	if by := a.cancelled(); by != "" {
		err = fmt.Errorf("cancelled by %s: %w", by, err)
	}
	rel.Status = releases.Failed
	rel.Reason = fmt.Sprintf("%s: %v", step, err)
	if serr := a.store.Save(rel); serr != nil {
		a.log.Error("save failed release", "release", rel.ID, "err", serr)
	}
	pr.Step("Deploy of %s failed at %s: %v", rel.ID, step, err)
	pr.Info("the live release is unchanged")
	if dir := a.store.Dir(rel.ID); a.cfg().Hooks.OnFailure != "" {
		if _, serr := os.Stat(dir); serr == nil {
			previous, _ := a.store.Current()
			env := append(a.buildEnv(rel, previous), "DEPLOYER_FAILED_STEP="+step, "DEPLOYER_ERROR="+err.Error())
			if herr := a.hook(a.work, pr, "on_failure", a.cfg().Hooks.OnFailure, dir, env); herr != nil {
				a.log.Warn("on_failure hook failed", "release", rel.ID, "err", herr)
			}
		}
	}
	_ = a.store.Record(releases.Event{Event: "failure", Release: rel.ID, By: rel.Pusher, Detail: rel.Reason})
	a.log.Warn("deploy failed", "release", rel.ID, "step", step, "err", err)
	return fmt.Errorf("%s: %w", step, err)
}

func (a *App) probeName() string {
	h := a.cfg().Health
	var s string
	switch {
	case h.HTTP != "":
		s = "GET " + h.HTTP
	case h.TCP:
		s = "a TCP connection"
	case h.Command != "":
		s = "command " + h.Command
	default:
		s = fmt.Sprintf("uptime %s", h.MinUptime)
	}
	if h.Notify {
		s = "READY=1, then " + s
	}
	return s
}

func orNone(id string) string {
	if id == "" {
		return "none"
	}
	return id
}

// stopGreen stops a green pool that will not go live.
func (a *App) stopGreen(green *supervisor.Pool) {
	green.Stop()
	a.setGreen(nil)
	a.saveWorkers()
}
