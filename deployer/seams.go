package deployer

import (
	"context"
	"os"
	"time"

	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

// The pipeline reaches the disk, git and worker processes through these
// small interfaces, so that each of its failure branches can be tested with
// fakes. In the daemon they are *releases.Store, *Repo, *supervisor.Pool
// and supervisor's Preflight and StartPool.

// store is an app's release store.
type store interface {
	Create(r *releases.Release) error
	CreateExact(r *releases.Release) error
	Save(r *releases.Release) error
	Get(id string) (*releases.Release, error)
	List() ([]*releases.Release, error)
	Current() (string, error)
	SetCurrent(id string) error
	ClearCurrent() error
	Prune(r *releases.Release) (int64, error)
	RemoveTree(id string) error
	Dir(id string) string
	BuildLog(id string) string
	Record(e releases.Event) error
	LastEvent(kinds ...string) *releases.Event
	History() ([]releases.Event, error)
}

// repository is an app's git repository.
type repository interface {
	Commit(rev string) (Commit, error)
	Checkout(ctx context.Context, tree, dir string, limit int64) error
	File(tree, name string, limit int64) ([]byte, error)
	Resolve(ref string) (string, error)
	ResolveRevision(rev string) (string, error)
	UpdateRef(ctx context.Context, ref, rev, old, reason string) error
	IsAncestor(a, b string) (bool, error)
}

// pool is the running workers of one release.
type pool interface {
	Release() string
	// WaitUp returns once every worker is up; if one fails, or ctx or
	// timeout ends first, it stops them all and says why.
	WaitUp(ctx context.Context, timeout time.Duration) error
	Stop()
	// StopAccepting sends the workers their stop signal and returns once
	// none holds the app's sockets any more, or timeout passes (an error).
	StopAccepting(timeout time.Duration) error
	// Warm sends the warm-up's requests to the pool's own workers through
	// the live socket.
	Warm(ctx context.Context, w supervisor.Warmup) supervisor.WarmResult
	// Detach stops supervising the workers and leaves them running.
	Detach()
	Status() []supervisor.WorkerStatus
	// Records are what a later daemon needs to adopt the running workers.
	Records() []supervisor.WorkerRecord
}

// starter starts workers: one on a private socket to probe it, or a pool on
// the app's sockets, or takes over the pool a previous daemon left.
type starter interface {
	// Preflight says how long the instance took from its start to healthy.
	Preflight(ctx context.Context, spec supervisor.PoolSpec, probe supervisor.Probe) (time.Duration, error)
	NewPool(spec supervisor.PoolSpec) pool
	// restartGone starts afresh the recorded workers whose process is gone.
	AdoptPool(spec supervisor.PoolSpec, recs []supervisor.WorkerRecord, out func(pid int) *os.File, restartGone bool) (pool, error)
}

// processes is the starter of real worker processes.
type processes struct{}

func (processes) Preflight(ctx context.Context, spec supervisor.PoolSpec, probe supervisor.Probe) (time.Duration, error) {
	return supervisor.Preflight(ctx, spec, probe)
}

func (processes) NewPool(spec supervisor.PoolSpec) pool { return supervisor.NewPool(spec) }

func (processes) AdoptPool(spec supervisor.PoolSpec, recs []supervisor.WorkerRecord, out func(pid int) *os.File, restartGone bool) (pool, error) {
	p, err := supervisor.AdoptPool(spec, recs, out, restartGone)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return p, nil
}
