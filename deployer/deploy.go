package deployer

import (
	"context"
	"fmt"
	"io"
	"os"
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
func (a *App) deploy(ctx context.Context, p Push, out io.Writer) error {
	pr := newProgress(out)
	unlock, err := a.acquire(ctx, pr, fmt.Sprintf("deploy of %s pushed by %s", short(p.New), p.Pusher))
	if err != nil {
		return err
	}
	defer unlock()
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
		Revision: p.New, Branch: a.cfg.Branch, Pusher: p.Pusher, Message: subject(commit),
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
	pr.Step("Deploying %s (%s) as %s, pushed by %s: %s", a.cfg.Branch, short(p.New), rel.ID, p.Pusher, rel.Message)

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

	// Build.
	t = time.Now()
	if a.cfg.Build != "" {
		pr.Step("Building: %s", a.cfg.Build)
		err := runShell(ctx, dir, a.cfg.Build, a.buildEnv(rel, previous), pr.indented(), a.cfg.BuildTimeout)
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

	// Preflight: never on a live socket.
	t = time.Now()
	spec := a.poolSpec(rel)
	if a.cfg.Health.Preflight {
		pr.Step("Preflight: one %s worker on a private socket, probing %s", rel.ID, a.probeName())
		probe := supervisor.Probe{HTTPPath: a.cfg.Health.HTTP, Timeout: a.cfg.Health.Timeout}
		if err := supervisor.Preflight(ctx, spec, probe); err != nil {
			return a.failed(pr, rel, "preflight", err)
		}
		pr.Step("Preflight passed (%s)", secs(time.Since(t)))
	}
	preflight := time.Since(t)

	// Green.
	t = time.Now()
	pr.Step("Starting %d green workers of %s (each must stay up %s)", rel.Workers, rel.ID, a.cfg.Health.MinUptime)
	green, err := supervisor.StartPool(ctx, spec, a.cfg.Health.Timeout)
	if err != nil {
		return a.failed(pr, rel, "green", err)
	}
	greenUp := time.Since(t)
	pr.Step("Green is up (%s)", secs(greenUp))

	// Cut-over: branch, then current, then blue retired.
	t = time.Now()
	if err := a.repo.UpdateRef(context.WithoutCancel(ctx), p.Ref, p.New, p.Old, "deployer: deploy "+rel.ID); err != nil {
		green.Stop()
		return a.failed(pr, rel, "cut-over", err)
	}
	if err := a.store.SetCurrent(rel.ID); err != nil {
		_ = a.repo.UpdateRef(context.WithoutCancel(ctx), p.Ref, p.Old, p.New, "deployer: undo deploy "+rel.ID)
		green.Stop()
		return a.failed(pr, rel, "cut-over", err)
	}
	blue := a.livePool()
	a.setLive(green)
	if blue != nil {
		blue.Stop()
	}
	rel.Status = releases.Live
	if err := a.store.Save(rel); err != nil {
		a.log.Error("save live release", "release", rel.ID, "err", err)
	}
	a.retire(previous)
	swap := time.Since(t)
	pr.Step("Cut-over: %s is live, %s retired (%s)", rel.ID, orNone(previous), secs(swap))

	total := time.Since(start)
	pr.Step("Deployed %s in %s (receive %s, checkout %s, build %s, preflight %s, green %s, swap %s)",
		rel.ID, secs(total+p.Received), secs(p.Received), secs(checkout), secs(build), secs(preflight),
		secs(greenUp), secs(swap))
	_ = a.store.Record(releases.Event{Event: "deploy", Release: rel.ID, From: previous, By: p.Pusher,
		Detail: fmt.Sprintf("%s %s", short(p.New), rel.Message)})
	a.log.Info("deployed", "release", rel.ID, "revision", short(p.New), "by", p.Pusher, "seconds", total.Seconds())
	return nil
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
			ErrRefMoved, a.cfg.Branch, short(cur), short(p.New))
	}
	return cur, nil
}

// retire marks the previously live release retired.
func (a *App) retire(id string) {
	if id == "" {
		return
	}
	if prev, err := a.store.Get(id); err == nil && prev.Status == releases.Live {
		prev.Status = releases.Retired
		_ = a.store.Save(prev)
	}
}

// failed records rel as failed at step and returns the error the pusher sees.
func (a *App) failed(pr *progress, rel *releases.Release, step string, err error) error {
	rel.Status = releases.Failed
	rel.Reason = fmt.Sprintf("%s: %v", step, err)
	if serr := a.store.Save(rel); serr != nil {
		a.log.Error("save failed release", "release", rel.ID, "err", serr)
	}
	pr.Step("Deploy of %s failed at %s: %v", rel.ID, step, err)
	pr.Info("the live release is unchanged")
	_ = a.store.Record(releases.Event{Event: "failure", Release: rel.ID, By: rel.Pusher, Detail: rel.Reason})
	a.log.Warn("deploy failed", "release", rel.ID, "step", step, "err", err)
	return fmt.Errorf("%s: %w", step, err)
}

func (a *App) probeName() string {
	if a.cfg.Health.HTTP != "" {
		return "GET " + a.cfg.Health.HTTP
	}
	return fmt.Sprintf("uptime %s", a.cfg.Health.MinUptime)
}

func orNone(id string) string {
	if id == "" {
		return "none"
	}
	return id
}
