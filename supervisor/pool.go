package supervisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/deployer/deployer/internal/account"
	"github.com/deployer/deployer/internal/cgroup"
)

// PoolSpec describes the workers of one release.
type PoolSpec struct {
	App      string
	Release  string // "v3"
	Revision string
	Dir      string // the release directory, never through the current link
	Start    string // sh -c command
	Workers  int
	Env      map[string]string // the app's env
	Sockets  []*Socket
	// MinUptime is how long each worker must stay up to count as started.
	MinUptime    time.Duration
	StopSignal   syscall.Signal
	DrainTimeout time.Duration
	// DeferAccept is set on Sockets (and preflight's private sockets):
	// see Socket.SetDeferAccept. 0: off.
	DeferAccept time.Duration
	// Log receives every worker's output, each line prefixed with release,
	// worker index and pid. It must be safe for concurrent use.
	Log io.Writer
	// Logger, if set, is the daemon's log: every unexpected exit of a
	// worker, with its status, and every restart are said there too.
	Logger *slog.Logger
	// Notify, if set, is passed as NOTIFY_SOCKET, and a worker counts as up
	// only once it sent READY=1 from its own pid.
	Notify *Notifier
	// Keeper, if set, holds a copy of each live worker's output pipe, so a
	// worker can go on writing after the daemon died.
	Keeper FDKeeper
	// Cgroups, if set, is where each worker process gets a cgroup of its
	// own, killed whole when the worker stops; nil: process groups only.
	Cgroups *cgroup.Tree
	// Limits apply to each worker's cgroup, as far as the tree has the
	// controllers (the daemon said at start which it has not).
	Limits cgroup.Limits
	// Account, if set, is the user the workers run as; nil: the daemon's.
	Account *account.Account
	// OnChange, if set, is called (from the worker's goroutine) whenever a
	// worker's process changes: started, restarted, exited. The caller saves
	// Records then, for the next daemon to adopt.
	OnChange func()
}

// deferAccept applies DeferAccept to sockets. A socket that refuses it
// still works, only without the option: that is said in the log.
func (spec PoolSpec) deferAccept(sockets []*Socket) {
	for _, s := range sockets {
		if err := s.SetDeferAccept(spec.DeferAccept); err != nil && spec.Logger != nil {
			spec.Logger.Warn("socket option not set", "app", spec.App, "err", err)
		}
	}
}

// Pool is the running workers of one release. A worker that crashes after
// it was up is restarted with backoff until the pool is stopped.
type Pool struct {
	spec    PoolSpec
	workers []*worker
	// started and idle are when NewPool started the workers, and the
	// machine's idle CPU then: the warm-up's budget is a share of what
	// stayed idle since.
	started time.Time
	idle    idleSample
}

// StartPool starts spec.Workers workers on spec.Sockets and returns once each
// has stayed up for MinUptime. If any fails, or timeout or ctx ends first,
// every worker started is stopped and the reason returned: the caller's old
// pool is never touched either way.
func StartPool(ctx context.Context, spec PoolSpec, timeout time.Duration) (*Pool, error) {
	p := NewPool(spec)
	if err := p.WaitUp(ctx, timeout); err != nil {
		return nil, err
	}
	return p, nil
}

// NewPool spawns spec.Workers workers on spec.Sockets and returns at once;
// WaitUp tells when they are up. Until then their state is "starting".
func NewPool(spec PoolSpec) *Pool {
	p := &Pool{spec: spec, started: time.Now(), idle: sampleIdle()}
	spec.deferAccept(spec.Sockets)
	for i := 0; i < spec.Workers; i++ {
		p.workers = append(p.workers, newWorker(p.workerSpec(i, spec.Sockets, true), nil, WorkerRecord{}))
	}
	return p
}

// WaitUp returns once each worker stayed up for MinUptime. If any fails, or
// timeout or ctx ends first, every worker is stopped and the reason returned.
func (p *Pool) WaitUp(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, w := range p.workers {
		select {
		case err := <-w.up:
			if err != nil {
				p.Stop()
				return fmt.Errorf("%w: %w", ErrNotUp, err)
			}
		case <-ctx.Done():
			p.Stop()
			return fmt.Errorf("%w: worker %d not up within %s: %w", ErrNotUp, w.spec.index, timeout, ctx.Err())
		}
	}
	return nil
}

// AdoptPool takes over the workers a previous daemon started for spec's
// release, as recorded by Records: each recorded process that is still the
// same process (pid and start time) is supervised as if this daemon had
// started it, its output read from out(pid) if the pipe was kept. A
// recorded worker whose process is gone is started afresh if restartGone,
// and left out otherwise: a pool that is only adopted to be retired (one
// that was draining, or a release no longer live) must not get new
// workers on the app's sockets. It fails with ErrNotAdoptable, changing
// nothing, if no recorded process is left.
func AdoptPool(spec PoolSpec, recs []WorkerRecord, out func(pid int) *os.File, restartGone bool) (*Pool, error) {
	type found struct {
		rec  WorkerRecord
		proc *process
	}
	recs = sane(recs, spec.Workers)
	var live []found
	for _, rec := range recs {
		proc, err := adoptProcess(rec, spec.App, spec.Release, spec.Cgroups)
		if err != nil {
			continue
		}
		proc.out = out(rec.PID)
		if proc.out != nil {
			proc.outName = OutputName(spec.App, rec.PID)
		}
		live = append(live, found{rec, proc})
	}
	if len(live) == 0 {
		return nil, fmt.Errorf("adopt %s: %w", spec.Release, ErrNotAdoptable)
	}
	p := &Pool{spec: spec}
	for _, rec := range recs {
		i := slices.IndexFunc(live, func(f found) bool { return f.rec.PID == rec.PID })
		if i < 0 {
			if restartGone {
				p.workers = append(p.workers, newWorker(p.workerSpec(rec.Index, spec.Sockets, true), nil, WorkerRecord{}))
			}
			continue
		}
		ws := p.workerSpec(rec.Index, spec.Sockets, true)
		w := newWorker(ws, live[i].proc, rec)
		if t, err := time.Parse(time.RFC3339Nano, rec.Since); err == nil {
			w.set(func(s *WorkerStatus) { s.Started = t })
		}
		p.workers = append(p.workers, w)
	}
	return p, nil
}

// Records are what a later daemon needs to adopt the pool's running
// workers (AdoptPool).
func (p *Pool) Records() []WorkerRecord {
	var out []WorkerRecord
	for _, w := range p.workers {
		if r, ok := w.record(); ok {
			out = append(out, r)
		}
	}
	return out
}

// Detach stops supervising every worker and leaves the processes running
// on the sockets, for the next daemon to adopt. It returns once no
// goroutine of the pool touches them any more.
func (p *Pool) Detach() {
	for _, w := range p.workers {
		w.Detach()
	}
	for _, w := range p.workers {
		<-w.Done()
	}
}

func (p *Pool) workerSpec(i int, sockets []*Socket, restart bool) workerSpec {
	s := p.spec
	env := map[string]string{}
	for k, v := range s.Env {
		env[k] = v
	}
	env["DEPLOYER_APP"] = s.App
	env["DEPLOYER_RELEASE"] = s.Release
	env["DEPLOYER_REVISION"] = s.Revision
	env["DEPLOYER_WORKER"] = strconv.Itoa(i)
	if s.Notify != nil {
		env["NOTIFY_SOCKET"] = s.Notify.Path()
	}
	return workerSpec{
		app: s.App, release: s.Release, index: i,
		dir: s.Dir, start: s.Start,
		env:          s.Account.Env(childEnv(os.Environ(), env, sockets)),
		sockets:      sockets,
		minUptime:    s.MinUptime,
		stopSignal:   s.StopSignal,
		drainTimeout: s.DrainTimeout,
		restart:      restart,
		log:          s.Log,
		logger:       s.Logger,
		notify:       s.Notify,
		keeper:       s.Keeper,
		cgroups:      s.Cgroups,
		limits:       s.Limits,
		account:      s.Account,
		onChange:     s.OnChange,
	}
}

// Release is the release this pool runs.
func (p *Pool) Release() string { return p.spec.Release }

// Stop drains every worker in parallel and returns once all are reaped.
func (p *Pool) Stop() {
	var wg sync.WaitGroup
	for _, w := range p.workers {
		w.Retire()
		wg.Add(1)
		go func() { defer wg.Done(); <-w.Done() }()
	}
	wg.Wait()
}

// Status is a snapshot of every worker.
func (p *Pool) Status() []WorkerStatus {
	out := make([]WorkerStatus, len(p.workers))
	for i, w := range p.workers {
		out[i] = w.Status()
	}
	return out
}

// sane keeps at most one record per worker index, and only indexes below
// workers: a tampered workers.json cannot make a pool of more workers than
// its release runs.
func sane(recs []WorkerRecord, workers int) []WorkerRecord {
	seen := map[int]bool{}
	var out []WorkerRecord
	for _, r := range recs {
		if r.Index < 0 || r.Index >= workers || seen[r.Index] {
			continue
		}
		seen[r.Index] = true
		out = append(out, r)
	}
	return out
}
