package supervisor

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
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
	// Log receives every worker's output, each line prefixed with release,
	// worker index and pid. It must be safe for concurrent use.
	Log io.Writer
	// Notify, if set, is passed as NOTIFY_SOCKET, and a worker counts as up
	// only once it sent READY=1 from its own pid.
	Notify *Notifier
}

// Pool is the running workers of one release. A worker that crashes after
// it was up is restarted with backoff until the pool is stopped.
type Pool struct {
	spec    PoolSpec
	workers []*worker
}

// StartPool starts spec.Workers workers on spec.Sockets and returns once each
// has stayed up for MinUptime. If any fails, or timeout or ctx ends first,
// every worker started is stopped and the reason returned: the caller's old
// pool is never touched either way.
func StartPool(ctx context.Context, spec PoolSpec, timeout time.Duration) (*Pool, error) {
	p := &Pool{spec: spec}
	for i := 0; i < spec.Workers; i++ {
		p.workers = append(p.workers, newWorker(p.workerSpec(i, spec.Sockets, true)))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, w := range p.workers {
		select {
		case err := <-w.up:
			if err != nil {
				p.Stop()
				return nil, fmt.Errorf("%w: %w", ErrNotUp, err)
			}
		case <-ctx.Done():
			p.Stop()
			return nil, fmt.Errorf("%w: worker %d not up within %s: %w", ErrNotUp, w.spec.index, timeout, ctx.Err())
		}
	}
	return p, nil
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
		env:          childEnv(os.Environ(), env, sockets),
		sockets:      sockets,
		minUptime:    s.MinUptime,
		stopSignal:   s.StopSignal,
		drainTimeout: s.DrainTimeout,
		restart:      restart,
		log:          s.Log,
		notify:       s.Notify,
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
