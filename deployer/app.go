package deployer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
	"gopkg.in/natefinch/lumberjack.v2"
)

// App is one configured application: its repository, releases, sockets and
// pools. Its fields are set once, by openApp; what changes — the config, the
// sockets, the live, green and draining pools, the running operation and
// its queue, the health.watch — belongs to the app's loop (loop.go), which
// is the only goroutine that writes it and publishes a snapshot for readers.
type App struct {
	name        string
	dir         string
	bare        *Repo // for the git transport
	repo        repository
	store       store
	starter     starter
	workerLog   io.WriteCloser
	log         *slog.Logger
	lockTimeout time.Duration
	maxRelease  int64           // git.max_release_size: the bound of one checkout
	waitReport  time.Duration   // how often a waiting client hears who holds the turn
	watchEvery  time.Duration   // how often health.watch probes
	work        context.Context // the daemon's: operations run on it, not on their client's
	notify      *supervisor.Notifier
	opts        Options                            // where sockets come from, for a config reload
	keeper      supervisor.FDKeeper                // holds copies of worker output pipes
	outputs     func(app string, pid int) *os.File // kept pipes of adopted workers
	stateMu     sync.Mutex                         // one writer of workers.json at a time

	// The loop's requests.
	opc       chan *op
	withdrawc chan withdrawal
	cancelc   chan cancelRequest
	closec    chan closeRequest
	finishedc chan finished
	swapc     chan swapRequest
	greenc    chan pool
	drainingc chan pool
	drainedc  chan pool
	watchc    chan *watchSpec
	done      chan struct{} // closed once the loop stopped taking requests
	stopped   chan struct{} // closed once the app's pools and sockets are closed

	view atomic.Pointer[snapshot] // what the loop last published
}

// openApp prepares an app's directories and repository, opens its sockets
// (or takes them back, per opts) and starts its loop. No worker starts, and
// none is adopted, until resume.
func openApp(work context.Context, dataDir string, cfg *config.App, git config.Git, notify *supervisor.Notifier, log *slog.Logger, opts Options) (*App, error) {
	dir := filepath.Join(dataDir, "apps", cfg.Name)
	st, err := releases.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", cfg.Name, err)
	}
	repo, err := InitRepo(filepath.Join(dir, "repo.git"), cfg.Branch)
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", cfg.Name, err)
	}
	sweepQuarantines(repo, log.With("app", cfg.Name))
	acct, err := cfg.Account()
	if err == nil {
		err = prepareAccount(dataDir, dir, acct, log.With("app", cfg.Name))
	}
	if err != nil {
		return nil, fmt.Errorf("apps.%s.user: %w", cfg.Name, err)
	}
	var sockets []*supervisor.Socket
	for i, addr := range cfg.Listen {
		s, err := opts.socket(cfg.Name, i, addr)
		if err != nil {
			supervisor.CloseSockets(sockets)
			return nil, fmt.Errorf("app %s: %w", cfg.Name, err)
		}
		// Taken back from a previous daemon, a socket keeps the options
		// it was given then: the adopted workers start no pool that would
		// set this config's.
		if err := s.SetDeferAccept(cfg.DeferAcceptFor()); err != nil {
			log.Warn("socket option not set", "app", cfg.Name, "err", err)
		}
		sockets = append(sockets, s)
	}
	a := &App{
		name: cfg.Name, dir: dir, bare: repo, repo: repo, store: st, starter: processes{},
		workerLog: &lumberjack.Logger{
			Filename: filepath.Join(dir, "logs", "workers.log"), MaxSize: 50, MaxBackups: 5,
		},
		log:         log.With("app", cfg.Name),
		lockTimeout: git.LockTimeout,
		maxRelease:  int64(git.MaxReleaseSize),
		waitReport:  10 * time.Second,
		watchEvery:  time.Second,
		work:        work,
		notify:      notify,
		opts:        opts,
		keeper:      opts.Keeper,
		outputs:     opts.Output,
	}
	a.start(cfg, sockets)
	return a, nil
}

// Name is the app's name.
func (a *App) Name() string { return a.name }

// Branch is the deploy branch.
func (a *App) Branch() string { return a.settings().Branch }

// Admits says whether pusher, authenticated by a transport, may push to the
// app and fetch from it: apps.APP.pushers as last configured.
func (a *App) Admits(pusher string) bool { return a.settings().Admits(pusher) }

// Repo is the app's bare repository.
func (a *App) Repo() *Repo { return a.bare }

// settings is the app's configuration as the loop last published it.
func (a *App) settings() *config.App { return a.view.Load().cfg }

// holder says what holds the app's turn, "" if nothing does.
func (a *App) holder() string { return a.view.Load().holder }

// pools are the live pool and those still draining.
func (a *App) pools() []pool { return a.view.Load().pools() }

// record appends e to the app's ledger. Every ledger write goes through it:
// a failure is logged, and returned for the callers to which it matters.
func (a *App) record(e releases.Event) error {
	if err := a.store.Record(e); err != nil {
		a.log.Error("ledger: event not recorded", "event", e.Event, "release", e.Release, "err", err)
		return err
	}
	if a.opts.OnEvent != nil {
		a.opts.OnEvent(a.name, e)
	}
	return nil
}

// save writes rel's metadata; a failure is logged and returned.
func (a *App) save(rel *releases.Release) error {
	if err := a.store.Save(rel); err != nil {
		a.log.Error("release metadata not saved", "release", rel.ID, "status", rel.Status, "err", err)
		return err
	}
	return nil
}

func short(rev string) string {
	if len(rev) > 7 {
		return rev[:7]
	}
	return rev
}

func orNone(id string) string {
	if id == "" {
		return "none"
	}
	return id
}

// sweepQuarantines removes what pushes that died mid-stream left in repo,
// and logs it.
func sweepQuarantines(repo *Repo, log *slog.Logger) {
	removed, err := repo.SweepQuarantines(StaleQuarantine)
	if len(removed) > 0 {
		log.Info("removed the quarantines of aborted pushes", "dirs", removed)
	}
	if err != nil {
		log.Error("quarantine sweep", "err", err)
	}
}
