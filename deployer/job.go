package deployer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/internal/account"
	"github.com/deployer/deployer/internal/cgroup"
	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

// job is an operation at work, in the goroutine its app's loop started: the
// app, the operation's context (ended by cancel or close), its client's
// progress, and the config and sockets the loop had when it started. Only
// a config reload's job changes cfg and sockets, and the loop takes them
// with the pool that runs them.
type job struct {
	*App
	ctx     context.Context
	pr      *progress
	cfg     *config.App
	sockets []*supervisor.Socket
	acct    *account.Account // who the app's processes run as; nil: the daemon's user
}

// swap asks the loop to make green live with the job's config; it returns
// the pool green replaced, which the caller stops.
func (j *job) swap(green pool) pool {
	reply := make(chan pool, 1)
	j.swapc <- swapRequest{green: green, cfg: j.cfg, sockets: j.sockets, reply: reply}
	return <-reply
}

// setGreen tells the loop of the pool being started for a cut-over (nil:
// none any more), so that status and workers.json show it.
func (j *job) setGreen(green pool) { j.greenc <- green }

// drainInBackground stops blue, the pool swap returned and listed as
// draining, while the job goes on and returns: a deploy is done at its
// cut-over, not when the old workers are. It may outlive the job and the
// loop; a shutdown drains blue too (teardown stops every pool), and a
// handover lets it go mid-drain for the next daemon to finish.
func (j *job) drainInBackground(blue pool) {
	if blue == nil {
		return
	}
	go func() {
		blue.Stop()
		select {
		case j.drainedc <- blue:
		case <-j.done:
		}
	}()
}

// retireInBackground lists p as draining and stops it while the job goes
// on. It may outlive the job, and the loop.
func (j *job) retireInBackground(p pool) {
	j.drainingc <- p
	j.drainInBackground(p)
}

// startPool starts a pool of spec and waits until it is up.
func (j *job) startPool(spec supervisor.PoolSpec) (pool, error) {
	p := j.starter.NewPool(spec)
	if err := p.WaitUp(j.ctx, j.cfg.Health.Timeout); err != nil {
		return nil, err
	}
	return p, nil
}

// endWatch ends a running health.watch: something else is going live.
func (j *job) endWatch() { j.watchc <- nil }

// branchHead is the deploy branch's ref and the revision it names, ZeroRev
// if none.
func (j *job) branchHead() (ref, rev string) {
	ref = branchRef(j.cfg.Branch)
	return ref, head(j.repo, ref)
}

// maxProcfile bounds the Procfile the daemon reads.
const maxProcfile = 64 << 10

// startCommand is the configured start, else the web: line of the Procfile
// in tree, read from the commit and never from the checkout (see Repo.File).
func (j *job) startCommand(tree string) (string, error) {
	if j.cfg.Start != "" {
		return j.cfg.Start, nil
	}
	lines, err := j.procfile(tree)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("%w: set apps.%s.start or add a Procfile with a web: line", ErrNoStart, j.cfg.Name)
	case errors.Is(err, ErrNotAFile):
		return "", fmt.Errorf("%w: %w; commit the Procfile itself, or set apps.%s.start", ErrNoStart, err, j.cfg.Name)
	case errors.Is(err, releases.ErrTooLarge):
		return "", fmt.Errorf("%w: %w", ErrNoStart, err)
	case err != nil:
		return "", err
	}
	if cmd := lines["web"]; cmd != "" {
		return cmd, nil
	}
	return "", fmt.Errorf("%w: the Procfile has no web: line; set apps.%s.start", ErrNoStart, j.cfg.Name)
}

// releaseCommand is hooks.release, else the release: line of the Procfile
// in tree (Heroku's release phase), else "".
func (j *job) releaseCommand(tree string) string {
	if j.cfg.Hooks.Release != "" {
		return j.cfg.Hooks.Release
	}
	lines, _ := j.procfile(tree) // a Procfile that cannot be read has no release: line
	return lines["release"]
}

// procfile reads the Procfile in tree: process type -> command, the first
// line of each type.
func (j *job) procfile(tree string) (map[string]string, error) {
	b, err := j.repo.File(tree, "Procfile", maxProcfile)
	if err != nil {
		return nil, err
	}
	lines := map[string]string{}
	for line := range strings.Lines(string(b)) {
		name, cmd, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, cmd = strings.TrimSpace(name), strings.TrimSpace(cmd)
		if ok && cmd != "" && !strings.ContainsAny(name, " \t#") && lines[name] == "" {
			lines[name] = cmd
		}
	}
	return lines, nil
}

// limits are the app's limits in cgroup terms.
func limits(l config.Limits) cgroup.Limits {
	return cgroup.Limits{Memory: int64(l.Memory), Pids: l.Pids, CPU: l.CPUs()}
}

func (j *job) poolSpec(rel *releases.Release) supervisor.PoolSpec {
	spec := supervisor.PoolSpec{
		App: j.cfg.Name, Release: rel.ID, Revision: rel.Revision,
		Dir: j.store.Dir(rel.ID), Start: rel.Start, Workers: rel.Workers, Env: rel.Env,
		Sockets: j.sockets, MinUptime: j.cfg.Health.MinUptime,
		StopSignal: j.cfg.Signal(), DrainTimeout: j.cfg.DrainTimeout, DeferAccept: j.cfg.DeferAcceptFor(),
		Log: j.workerLog, Logger: j.log, Keeper: j.keeper, OnChange: j.saveWorkers, Cgroups: j.opts.Cgroups,
		Account: j.acct, Limits: limits(j.cfg.Limits),
	}
	if j.cfg.Health.Notify {
		spec.Notify = j.notify
	}
	return spec
}

// buildEnv is the environment of the build and hooks of rel.
func (j *job) buildEnv(rel *releases.Release, previous string) []string {
	extra := map[string]string{}
	for k, v := range j.cfg.Env {
		extra[k] = v
	}
	extra["DEPLOYER_APP"] = j.cfg.Name
	extra["DEPLOYER_RELEASE"] = rel.ID
	extra["DEPLOYER_REVISION"] = rel.Revision
	extra["DEPLOYER_PREVIOUS_RELEASE"] = previous
	extra["DEPLOYER_RELEASE_DIR"] = j.store.Dir(rel.ID)
	return commandEnv(extra)
}

// applyConfig sets what rel runs with from the app's configuration.
func (j *job) applyConfig(rel *releases.Release) {
	rel.Workers = j.cfg.Workers
	rel.Env = j.cfg.Env
	if j.cfg.Start != "" {
		rel.Start = j.cfg.Start
	}
}
