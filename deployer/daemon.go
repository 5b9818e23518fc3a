package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/internal/cgroup"
	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
	"github.com/robfig/cron/v3"
)

// Daemon runs every configured app.
type Daemon struct {
	cfg  *config.Config
	log  *slog.Logger
	apps map[string]*App

	ctx    context.Context // deploys run on it, not on the pusher's
	cancel context.CancelFunc

	cron   *cron.Cron // scheduled cleanups
	notify *supervisor.Notifier
	opts   Options

	reconfMu sync.Mutex   // one config reload at a time
	appsMu   sync.RWMutex // guards apps and cfg, which a config reload changes
	mu       sync.Mutex
	closed   bool          // operations are turned away (shutdown, or quiesced for a handover)
	ops      int           // operations running for clients
	idle     chan struct{} // closed when ops drops to 0; nil if nobody waits for it
}

// Options are what the daemon's server hands the apps: where their sockets
// and descriptors come from when they outlive a daemon. The zero value
// listens afresh and keeps nothing.
type Options struct {
	// Socket opens app's listen address i, or takes it back from where a
	// previous daemon left it; nil listens afresh.
	Socket func(app string, i int, addr string) (*supervisor.Socket, error)
	// Notify is the notify socket; nil opens data_dir/notify.sock.
	Notify *supervisor.Notifier
	// Keeper holds copies of live workers' output pipes; nil keeps none.
	Keeper supervisor.FDKeeper
	// Output is the kept output pipe of worker pid of app, left by a
	// previous daemon, or nil.
	Output func(app string, pid int) *os.File
	// Cgroups, if set, gives every build, hook, preflight instance and
	// worker a cgroup of its own; nil: process groups only.
	Cgroups *cgroup.Tree
	// Peers, if set, are the fleet's other hosts: a push rolls out to
	// them. nil: this host alone.
	Peers Peers
	// OnEvent, if set, is told of every event of app's ledger once it is
	// written (for metrics and the status page). It must not block.
	OnEvent func(app string, e releases.Event)
}

func (o Options) socket(app string, i int, addr string) (*supervisor.Socket, error) {
	if o.Socket != nil {
		return o.Socket(app, i, addr)
	}
	return supervisor.ListenSocket(addr, fmt.Sprintf("%s-%d", app, i), 10*time.Second)
}

// New opens every app: directories, repositories and held sockets. It does
// not start any worker; Start does.
func New(cfg *config.Config, log *slog.Logger, opts Options) (*Daemon, error) {
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "apps"), 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{cfg: cfg, log: log, apps: map[string]*App{}, ctx: ctx, cancel: cancel, opts: opts}
	notify := opts.Notify
	if notify == nil {
		var err error
		if notify, err = supervisor.ListenNotify(filepath.Join(cfg.DataDir, "notify.sock")); err != nil {
			cancel()
			return nil, err
		}
	}
	d.notify = notify
	warnSharedUsers(cfg, log)
	for _, name := range cfg.AppNames() {
		a, err := openApp(ctx, cfg.DataDir, cfg.Apps[name], cfg.Git, notify, log, opts)
		if err != nil {
			d.closeApps()
			notify.Close()
			cancel()
			return nil, err
		}
		d.apps[name] = a
	}
	return d, nil
}

// Start brings up each app's live release and the cleanup schedule. An app
// that fails to start is logged and left without workers; the others start
// regardless.
func (d *Daemon) Start() {
	var wg sync.WaitGroup
	for _, a := range d.appList() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.resume(d.ctx); err != nil {
				a.log.Error("could not start the live release", "err", err)
			}
		}()
	}
	wg.Wait()
	d.schedule()
}

// schedule (re)starts the cleanup schedule from the current config.
func (d *Daemon) schedule() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	if d.cron != nil {
		d.cron.Stop() // running jobs finish on their own
	}
	d.cron = cron.New()
	for _, a := range d.appList() {
		name, spec := a.Name(), a.settings().CleanupSchedule
		if spec == "" {
			continue
		}
		_, err := d.cron.AddFunc(spec, func() {
			if _, err := d.Cleanup(d.ctx, name, -1, false, "schedule"); err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrUnknownApp) {
				a.log.Error("scheduled cleanup", "err", err)
			}
		})
		if err != nil { // Validate parsed it already
			a.log.Error("cleanup_schedule", "err", err)
		}
	}
	d.cron.Start()
}

// appList is every app, by name.
func (d *Daemon) appList() []*App {
	d.appsMu.RLock()
	defer d.appsMu.RUnlock()
	out := make([]*App, 0, len(d.apps))
	for _, a := range d.apps {
		out = append(out, a)
	}
	slices.SortFunc(out, func(x, y *App) int { return strings.Compare(x.Name(), y.Name()) })
	return out
}

// App returns the named app.
func (d *Daemon) App(name string) (*App, error) {
	d.appsMu.RLock()
	a, ok := d.apps[name]
	d.appsMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownApp, name)
	}
	return a, nil
}

// Deploy deploys p to app, writing progress to out until ctx ends. The
// deploy itself runs on the daemon's context: if ctx ends first (the pusher
// went away), Deploy returns ctx's error and the deploy carries on.
func (d *Daemon) Deploy(ctx context.Context, app string, p Push, out io.Writer) error {
	return d.run(ctx, app, out, func(a *App, wait context.Context, w io.Writer) error { return a.deploy(wait, p, w) })
}

// DeployRev builds and deploys rev (default: the deploy branch) without a
// push: on this host alone, or rolled out to the fleet.
func (d *Daemon) DeployRev(ctx context.Context, app, rev, by string, toFleet bool, out io.Writer) error {
	return d.run(ctx, app, out, func(a *App, wait context.Context, w io.Writer) error { return a.deployRev(wait, rev, by, toFleet, w) })
}

// Rollback makes release to (default: the previous good one) live again.
func (d *Daemon) Rollback(ctx context.Context, app, to, by string, out io.Writer) error {
	return d.run(ctx, app, out, func(a *App, wait context.Context, w io.Writer) error { return a.rollback(wait, to, by, w) })
}

// Reload starts fresh workers of the live release of app, or of every app
// with a live release when app is "".
func (d *Daemon) Reload(ctx context.Context, app, by string, out io.Writer) error {
	if app != "" {
		return d.run(ctx, app, out, func(a *App, wait context.Context, w io.Writer) error { return a.reload(wait, by, w) })
	}
	var errs []error
	for _, a := range d.appList() {
		if _, err := a.store.Current(); err != nil {
			continue // nothing live to reload
		}
		if err := d.Reload(ctx, a.Name(), by, out); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// Cleanup prunes app's releases; keep < 0 means the configured keep_releases.
func (d *Daemon) Cleanup(ctx context.Context, app string, keep int, dryRun bool, by string) (*CleanupResult, error) {
	var res *CleanupResult
	err := d.run(ctx, app, io.Discard, func(a *App, wait context.Context, _ io.Writer) error {
		var err error
		res, err = a.cleanup(wait, keep, dryRun, by)
		return err
	})
	return res, err
}

// run runs op on the daemon's context, forwarding its output to out until
// ctx ends; op carries on if ctx ends first.
//
// op gets wait, for waiting on the deploy lock: it ends when the client
// leaves or the daemon stops, so a client that gave up is not served late.
func (d *Daemon) run(ctx context.Context, app string, out io.Writer, op func(a *App, wait context.Context, w io.Writer) error) error {
	a, err := d.App(app)
	if err != nil {
		return err
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	d.ops++
	d.mu.Unlock()
	q := newOutQueue(out)
	wait, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(d.ctx, cancel)
	done := make(chan error, 1)
	go func() {
		defer d.opEnded()
		defer stop()
		defer cancel()
		err := op(a, wait, q)
		q.close()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		q.detach()
		a.log.Info("client disconnected; the operation continues")
		return ctx.Err()
	}
}

func (d *Daemon) opEnded() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ops--; d.ops == 0 && d.idle != nil {
		close(d.idle)
		d.idle = nil
	}
}

// opsEnded is closed once no operation runs for a client. Unlike a
// WaitGroup's Wait, it may be abandoned and operations may start again
// (Unquiesce) while someone still waits.
func (d *Daemon) opsEnded() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ops == 0 {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	if d.idle == nil {
		d.idle = make(chan struct{})
	}
	return d.idle
}

// Cancel stops app's running deploy, rollback or reload and says what it was.
func (d *Daemon) Cancel(app, by string) (string, error) {
	a, err := d.App(app)
	if err != nil {
		return "", err
	}
	return a.cancel(by)
}

// Releases lists app's releases, newest first, and the live one's id.
func (d *Daemon) Releases(app string) ([]*releases.Release, string, error) {
	a, err := d.App(app)
	if err != nil {
		return nil, "", err
	}
	list, err := a.store.List()
	if err != nil {
		return nil, "", err
	}
	live, _ := a.store.Current()
	return list, live, nil
}

// History is app's ledger (history.jsonl), oldest first: every deploy,
// failure, rollback, reload, cleanup, recovery and stop. It reads the file
// and never waits for a running operation.
func (d *Daemon) History(app string) ([]releases.Event, error) {
	a, err := d.App(app)
	if err != nil {
		return nil, err
	}
	return a.store.History()
}

// ReleasesDir is the directory of app's release trees and their metadata
// (apps/APP/releases), for its disk use.
func (d *Daemon) ReleasesDir(app string) (string, error) {
	a, err := d.App(app)
	if err != nil {
		return "", err
	}
	return filepath.Join(a.dir, "releases"), nil
}

// Status of one app.
type Status struct {
	App     string                    `json:"app"`
	Branch  string                    `json:"branch"`
	Listen  []string                  `json:"listen"`
	Live    string                    `json:"live"`
	Workers []supervisor.WorkerStatus `json:"workers"`
	// LastDeploy is the newest deploy, rollback, reload or failure.
	LastDeploy *releases.Event `json:"last_deploy"`
}

// Status reports every app, by name.
func (d *Daemon) Status() []Status {
	var out []Status
	for _, a := range d.appList() {
		out = append(out, a.status())
	}
	return out
}

// status is the app's Status, from the snapshot its loop published: it
// never waits for a running operation.
func (a *App) status() Status {
	v := a.view.Load()
	s := Status{App: a.name, Branch: v.cfg.Branch, Listen: v.cfg.Listen, Workers: []supervisor.WorkerStatus{}}
	s.Live, _ = a.store.Current()
	for _, p := range v.pools() {
		s.Workers = append(s.Workers, p.Status()...)
	}
	s.LastDeploy = a.store.LastEvent("deploy", "rollback", "reload", "failure")
	return s
}

// Shutdown stops new deploys, waits for running ones until ctx ends (then
// cancels them), drains every pool and closes the sockets.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	d.closed = true
	c := d.cron
	d.mu.Unlock()
	if c != nil {
		c.Stop() // a job already running is an operation counted in ops
	}
	waited := d.opsEnded()
	var err error
	select {
	case <-waited:
	case <-ctx.Done():
		err = fmt.Errorf("shutdown: cancelled running deploys: %w", ctx.Err())
		d.cancel()
		<-waited
	}
	d.cancel()
	d.reconfMu.Lock() // a config reload in progress ends first (its work was just cancelled)
	defer d.reconfMu.Unlock()
	for _, a := range d.appList() {
		a.record(releases.Event{Event: "stop", By: "shutdown"})
	}
	d.closeApps()
	d.notify.Close()
	return err
}

func (d *Daemon) closeApps() {
	var wg sync.WaitGroup
	for _, a := range d.appList() {
		wg.Add(1)
		go func() { defer wg.Done(); a.close("shutdown") }()
	}
	wg.Wait()
}

// outQueue decouples an operation from its client: Write never blocks, a
// goroutine copies to the client, and a client that stops reading (or
// falls more than outQueueSize writes behind) is detached and gets no more
// output. The operation itself is never slowed or stopped by its client.
type outQueue struct {
	ch   chan []byte
	done chan struct{}

	mu       sync.Mutex
	detached bool
}

const outQueueSize = 4096

func newOutQueue(w io.Writer) *outQueue {
	ch := make(chan []byte, outQueueSize)
	q := &outQueue{ch: ch, done: make(chan struct{})}
	go func() {
		defer close(q.done)
		for b := range ch {
			if q.isDetached() {
				continue
			}
			if _, err := w.Write(b); err != nil {
				q.detach()
			}
		}
	}()
	return q
}

func (q *outQueue) Write(b []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.detached {
		return 0, errDetached
	}
	select {
	case q.ch <- append([]byte(nil), b...):
		return len(b), nil
	default:
		q.detached = true
		return 0, errDetached
	}
}

func (q *outQueue) isDetached() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.detached
}

func (q *outQueue) detach() {
	q.mu.Lock()
	q.detached = true
	q.mu.Unlock()
}

// close stops taking writes and waits until what was queued reached the
// client, the client was detached, or outDrainTimeout passed: a client that
// reads very slowly does not hold the operation (or the daemon's shutdown).
func (q *outQueue) close() {
	q.mu.Lock()
	if q.ch != nil {
		close(q.ch)
		q.ch = nil
	}
	q.mu.Unlock()
	t := time.NewTimer(outDrainTimeout)
	defer t.Stop()
	select {
	case <-q.done:
	case <-t.C:
		q.detach()
	}
}

// outDrainTimeout bounds how long finished output may take to reach a client.
const outDrainTimeout = 10 * time.Second

var errDetached = errors.New("client disconnected")

// warnSharedUsers says at start which apps run as the same user: they can
// read and change each other's trees, shared files and processes
// (docs/SECURITY.md). Allowed, for apps that belong together.
func warnSharedUsers(cfg *config.Config, log *slog.Logger) {
	byUID := map[uint32][]string{}
	for _, name := range cfg.AppNames() {
		if acct, err := cfg.Apps[name].Account(); err == nil && acct != nil && !acct.Root() {
			byUID[acct.UID] = append(byUID[acct.UID], name)
		}
	}
	for uid, apps := range byUID {
		if len(apps) > 1 {
			log.Warn("apps run as the same user and can reach each other's files and processes: give each a user of its own",
				"uid", uid, "apps", strings.Join(apps, ","))
		}
	}
}
