package deployer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
	"gopkg.in/natefinch/lumberjack.v2"
)

// App is one configured application: its repository, releases, sockets and
// live pool.
type App struct {
	cfgp        atomic.Pointer[config.App] // swapped whole, under the deploy lock, by a config reload
	dir         string
	repo        *Repo
	store       *releases.Store
	sockets     []*supervisor.Socket
	workerLog   *lumberjack.Logger
	log         *slog.Logger
	lockTimeout time.Duration
	work        context.Context // the daemon's: deploys run on it, not on their client's

	lock     chan struct{} // the deploy lock: one holder at a time
	holderMu sync.Mutex
	holder   string // what holds the lock, for waiters

	mu        sync.Mutex // guards live and stopWatch; only the lock holder writes live
	live      *supervisor.Pool
	green     *supervisor.Pool   // the pool being started for a cut-over, visible as starting
	draining  []*supervisor.Pool // retired pools still draining
	stopWatch context.CancelFunc // ends a running health.watch
	cancelOp  context.CancelFunc // cancels the running deploy, rollback or reload
	cancelBy  string             // who cancelled it
	closed    bool               // removed from the config or the daemon stopped
	notify    *supervisor.Notifier

	keeper  supervisor.FDKeeper                // holds copies of worker output pipes
	outputs func(app string, pid int) *os.File // kept pipes of adopted workers
	stateMu sync.Mutex                         // one writer of workers.json at a time
}

// openApp prepares an app's directories and repository and opens its sockets.
func openApp(work context.Context, dataDir string, cfg *config.App, git config.Git, log *slog.Logger, opts Options) (*App, error) {
	dir := filepath.Join(dataDir, "apps", cfg.Name)
	store, err := releases.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", cfg.Name, err)
	}
	repo, err := InitRepo(filepath.Join(dir, "repo.git"), cfg.Branch)
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", cfg.Name, err)
	}
	var sockets []*supervisor.Socket
	for i, addr := range cfg.Listen {
		s, err := opts.socket(cfg.Name, i, addr)
		if err != nil {
			supervisor.CloseSockets(sockets)
			return nil, fmt.Errorf("app %s: %w", cfg.Name, err)
		}
		sockets = append(sockets, s)
	}
	a := &App{
		dir: dir, repo: repo, store: store, sockets: sockets,
		workerLog: &lumberjack.Logger{
			Filename: filepath.Join(dir, "logs", "workers.log"), MaxSize: 50, MaxBackups: 5,
		},
		log:         log.With("app", cfg.Name),
		lockTimeout: git.LockTimeout,
		lock:        make(chan struct{}, 1),
		work:        work,
		keeper:      opts.Keeper,
		outputs:     opts.Output,
	}
	a.cfgp.Store(cfg)
	return a, nil
}

// cfg is the app's configuration. A deploy lock holder sees it stable.
func (a *App) cfg() *config.App { return a.cfgp.Load() }

// Name is the app's name.
func (a *App) Name() string { return a.cfg().Name }

// Branch is the deploy branch.
func (a *App) Branch() string { return a.cfg().Branch }

// Repo is the app's bare repository.
func (a *App) Repo() *Repo { return a.repo }

// acquire takes the deploy lock for what, telling pr who holds it while it
// waits, up to the lock timeout.
func (a *App) acquire(ctx context.Context, pr *progress, what string) (func(), error) {
	take := func() (func(), error) {
		if a.isClosed() {
			<-a.lock
			return nil, fmt.Errorf("app %s: %w", a.Name(), ErrClosed)
		}
		a.holderMu.Lock()
		a.holder = fmt.Sprintf("%s (since %s)", what, time.Now().UTC().Format(time.TimeOnly))
		a.holderMu.Unlock()
		return func() { <-a.lock }, nil
	}
	select {
	case a.lock <- struct{}{}:
		return take()
	default:
	}
	holder := func() string {
		a.holderMu.Lock()
		defer a.holderMu.Unlock()
		return a.holder
	}
	pr.Step("Waiting for the deploy lock of %s: held by %s", a.cfg().Name, holder())
	timeout := time.NewTimer(a.lockTimeout)
	defer timeout.Stop()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case a.lock <- struct{}{}:
			return take()
		case <-tick.C:
			pr.Info("still waiting: %s", holder())
		case <-timeout.C:
			return nil, fmt.Errorf("%w: %s; gave up after %s", ErrLockTimeout, holder(), a.lockTimeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (a *App) livePool() *supervisor.Pool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.live
}

// pools are the live pool and those still draining, for status and cleanup.
func (a *App) pools() []*supervisor.Pool {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*supervisor.Pool
	if a.live != nil {
		out = append(out, a.live)
	}
	if a.green != nil {
		out = append(out, a.green)
	}
	return append(out, a.draining...)
}

func (a *App) setGreen(p *supervisor.Pool) {
	a.mu.Lock()
	a.green = p
	a.mu.Unlock()
}

func (a *App) setLive(p *supervisor.Pool) {
	a.mu.Lock()
	a.live = p
	a.mu.Unlock()
}

// startCommand is the configured start, else the repo's Procfile web: line.
func (a *App) startCommand(dir string) (string, error) {
	if a.cfg().Start != "" {
		return a.cfg().Start, nil
	}
	f, err := os.Open(filepath.Join(dir, "Procfile"))
	if err != nil {
		return "", fmt.Errorf("%w: set apps.%s.start or add a Procfile with a web: line", ErrNoStart, a.cfg().Name)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if cmd, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "web:"); ok && strings.TrimSpace(cmd) != "" {
			return strings.TrimSpace(cmd), nil
		}
	}
	return "", fmt.Errorf("%w: the Procfile has no web: line; set apps.%s.start", ErrNoStart, a.cfg().Name)
}

func (a *App) poolSpec(rel *releases.Release) supervisor.PoolSpec {
	return supervisor.PoolSpec{
		App: a.cfg().Name, Release: rel.ID, Revision: rel.Revision,
		Dir: a.store.Dir(rel.ID), Start: rel.Start, Workers: rel.Workers, Env: rel.Env,
		Sockets: a.sockets, MinUptime: a.cfg().Health.MinUptime,
		StopSignal: a.cfg().Signal(), DrainTimeout: a.cfg().DrainTimeout,
		Log: a.workerLog, Notify: a.notifier(),
		Keeper: a.keeper, OnChange: a.saveWorkers,
	}
}

func (a *App) notifier() *supervisor.Notifier {
	if a.cfg().Health.Notify {
		return a.notify
	}
	return nil
}

// commandEnv is the environment of the build and hooks of rel.
func (a *App) buildEnv(rel *releases.Release, previous string) []string {
	extra := map[string]string{}
	for k, v := range a.cfg().Env {
		extra[k] = v
	}
	extra["DEPLOYER_APP"] = a.cfg().Name
	extra["DEPLOYER_RELEASE"] = rel.ID
	extra["DEPLOYER_REVISION"] = rel.Revision
	extra["DEPLOYER_PREVIOUS_RELEASE"] = previous
	extra["DEPLOYER_RELEASE_DIR"] = a.store.Dir(rel.ID)
	return commandEnv(extra)
}

// resume starts the pool of the current release, at daemon start.
func (a *App) resume(ctx context.Context) error {
	unlock, err := a.acquire(ctx, newProgress(nil), "daemon start")
	if err != nil {
		return err
	}
	defer unlock()
	cur, _ := a.store.Current()
	adopted := a.adopt(cur)
	a.recover()
	if adopted != nil {
		a.setLive(adopted)
		a.saveWorkers()
		return nil
	}
	id, err := a.store.Current()
	if errors.Is(err, releases.ErrNoCurrent) {
		a.log.Info("no live release yet: push to deploy", "branch", a.cfg().Branch, "listen", a.cfg().Listen)
		return nil
	}
	if err != nil {
		return err
	}
	rel, err := a.store.Get(id)
	if err != nil {
		return err
	}
	a.applyConfig(rel)
	pool, err := supervisor.StartPool(ctx, a.poolSpec(rel), a.cfg().Health.Timeout)
	if err != nil {
		return a.fallBack(ctx, rel, fmt.Errorf("start %s: %w", id, err))
	}
	a.setLive(pool)
	a.saveWorkers()
	a.log.Info("serving", "release", id, "revision", short(rel.Revision), "workers", rel.Workers)
	return nil
}

// fallBack, at daemon start, puts the previous good release live when the
// current one would not start, rather than leave the app with no worker.
func (a *App) fallBack(ctx context.Context, cur *releases.Release, why error) error {
	list, err := a.store.List()
	if err != nil {
		return why
	}
	prev := releases.PreviousGood(list, cur.ID)
	if prev == nil {
		return why
	}
	a.log.Error("the live release does not start; falling back", "release", cur.ID, "to", prev.ID, "err", why)
	ref := "refs/heads/" + a.cfg().Branch
	from, err := a.repo.Resolve(ref)
	if err != nil {
		from = ZeroRev
	}
	pr := newProgress(nil)
	if _, err := a.goLive(ctx, pr, prev, cutover{ref: ref, from: from, to: prev.Revision, previous: cur.ID, retireAs: releases.RolledBack}); err != nil {
		return fmt.Errorf("%w; falling back to %s failed too: %w", why, prev.ID, err)
	}
	_ = a.store.Record(releases.Event{Event: "rollback", Release: prev.ID, From: cur.ID, By: "deployer",
		Detail: "the live release did not start: " + why.Error()})
	return nil
}

// applyConfig sets what rel runs with from the app's configuration.
func (a *App) applyConfig(rel *releases.Release) {
	rel.Workers = a.cfg().Workers
	rel.Env = a.cfg().Env
	if a.cfg().Start != "" {
		rel.Start = a.cfg().Start
	}
}

// recover brings the disk back to a consistent state after a crash: a
// release left building is marked failed and its tree removed, the current
// release is marked live, and the deploy branch names the live revision.
func (a *App) recover() {
	list, err := a.store.List()
	if err != nil {
		a.log.Error("recover", "err", err)
		return
	}
	cur, _ := a.store.Current()
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
			killProcessesIn(a.store.Dir(rel.ID))
			os.RemoveAll(a.store.Dir(rel.ID))
		case rel.Status == releases.Live:
			rel.Status = releases.Retired
		default:
			continue
		}
		if err := a.store.Save(rel); err != nil {
			a.log.Error("recover", "release", rel.ID, "err", err)
			continue
		}
		a.log.Warn("recovered release state", "release", rel.ID, "status", rel.Status)
		_ = a.store.Record(releases.Event{Event: "recover", Release: rel.ID, By: "deployer", Detail: string(rel.Status)})
	}
	if cur == "" {
		return
	}
	live, err := a.store.Get(cur)
	if err != nil {
		return
	}
	ref := "refs/heads/" + a.cfg().Branch
	if head, err := a.repo.Resolve(ref); err == nil && head != live.Revision {
		if err := a.repo.UpdateRef(context.Background(), ref, live.Revision, head, "deployer: recover to live "+cur); err != nil {
			a.log.Error("recover branch", "err", err)
		} else {
			a.log.Warn("moved the deploy branch back to the live release", "release", cur, "from", short(head))
		}
	}
}

// close drains the live pool and closes the sockets: daemon shutdown only.
// close stops the app for good: it cancels what runs, waits for the deploy
// lock (without a timeout: the operation holding it is cancelled and
// returns), drains every pool and closes the sockets. Later operations get
// ErrClosed.
func (a *App) close(by string) {
	_, _ = a.cancel(by)
	a.lock <- struct{}{} // hold the lock for good
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.endWatch()
	for _, p := range a.pools() {
		p.Stop()
	}
	supervisor.CloseSockets(a.sockets)
	a.workerLog.Close()
	<-a.lock // waiters see closed and give up
}

func (a *App) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

func short(rev string) string {
	if len(rev) > 7 {
		return rev[:7]
	}
	return rev
}
