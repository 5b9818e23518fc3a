package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

// fakeRepo is a repository of refs and commits in memory. UpdateRef is a
// real compare-and-swap.
type fakeRepo struct {
	mu        sync.Mutex
	refs      map[string]string
	commits   map[string]Commit
	ancestors map[string][]string // commit → its ancestors
	updateErr error               // UpdateRef fails with it when set
	updates   int
}

func newFakeRepo() *fakeRepo {
	return &fakeRepo{refs: map[string]string{}, commits: map[string]Commit{}, ancestors: map[string][]string{}}
}

func (r *fakeRepo) Commit(rev string) (Commit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.commits[rev]
	if !ok {
		return Commit{}, fmt.Errorf("read commit %s: not found", short(rev))
	}
	return c, nil
}

func (r *fakeRepo) Checkout(_ context.Context, tree, dir string, _ int64) error {
	return os.WriteFile(filepath.Join(dir, "tree"), []byte(tree), 0o644)
}

func (r *fakeRepo) File(_, name string, _ int64) ([]byte, error) {
	return nil, fmt.Errorf("read %s: %w", name, os.ErrNotExist)
}

func (r *fakeRepo) Resolve(ref string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rev, ok := r.refs[ref]
	if !ok {
		return "", fmt.Errorf("resolve %s: not found", ref)
	}
	return rev, nil
}

func (r *fakeRepo) ResolveRevision(rev string) (string, error) {
	if h, err := r.Resolve(branchRef(rev)); err == nil {
		return h, nil
	}
	if _, err := r.Commit(rev); err != nil {
		return "", err
	}
	return rev, nil
}

func (r *fakeRepo) UpdateRef(_ context.Context, ref, rev, old, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.updateErr != nil {
		return r.updateErr
	}
	cur, ok := r.refs[ref]
	if !ok {
		cur = ZeroRev
	}
	if cur != old {
		return fmt.Errorf("%w: %s is at %s, not %s", ErrRefMoved, ref, short(cur), short(old))
	}
	if rev == ZeroRev { // as git update-ref: the ref is deleted
		delete(r.refs, ref)
	} else {
		r.refs[ref] = rev
	}
	r.updates++
	return nil
}

func (r *fakeRepo) IsAncestor(a, b string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a == b {
		return true, nil
	}
	for _, x := range r.ancestors[b] {
		if x == a {
			return true, nil
		}
	}
	return false, nil
}

func (r *fakeRepo) branch() string {
	rev, _ := r.Resolve(branchRef("main"))
	return rev
}

// addCommit adds commit rev on top of parents.
func (r *fakeRepo) addCommit(rev, subject string, parents ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.commits[rev] = Commit{Hash: rev, Tree: "tree-" + rev, Subject: subject}
	var anc []string
	for _, p := range parents {
		anc = append(anc, p)
		anc = append(anc, r.ancestors[p]...)
	}
	r.ancestors[rev] = anc
}

// faultyStore is a real store that fails the writes a test asks it to.
type faultyStore struct {
	*releases.Store
	mu            sync.Mutex
	setCurrentErr error
	saveErr       func(r *releases.Release) error
	recordErr     error
}

func (s *faultyStore) SetCurrent(id string) error {
	s.mu.Lock()
	err := s.setCurrentErr
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.Store.SetCurrent(id)
}

func (s *faultyStore) Save(r *releases.Release) error {
	s.mu.Lock()
	f := s.saveErr
	s.mu.Unlock()
	if f != nil {
		if err := f(r); err != nil {
			return err
		}
	}
	return s.Store.Save(r)
}

func (s *faultyStore) Record(e releases.Event) error {
	s.mu.Lock()
	err := s.recordErr
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.Store.Record(e)
}

func (s *faultyStore) fail(set func(s *faultyStore)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set(s)
}

// fakeStarter starts fakePools, or fails as told.
type fakeStarter struct {
	mu           sync.Mutex
	preflightErr error
	startErr     error
	hold         chan struct{} // if set, StartPool waits for it (or ctx)
	pools        []*fakePool
	preflights   int
	healthyAfter time.Duration // what Preflight says it took
}

func (s *fakeStarter) Preflight(ctx context.Context, spec supervisor.PoolSpec, _ supervisor.Probe) (time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.preflights++
	return s.healthyAfter, s.preflightErr
}

func (s *fakeStarter) NewPool(spec supervisor.PoolSpec) pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &fakePool{spec: spec, stopped: make(chan struct{}), hold: s.hold, upErr: s.startErr}
	s.pools = append(s.pools, p)
	return p
}

func (s *fakeStarter) AdoptPool(spec supervisor.PoolSpec, recs []supervisor.WorkerRecord, _ func(int) *os.File, _ bool) (pool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(recs) == 0 {
		return nil, supervisor.ErrNotAdoptable
	}
	p := &fakePool{spec: spec, stopped: make(chan struct{}), adopted: recs}
	s.pools = append(s.pools, p)
	return p, nil
}

func (s *fakeStarter) set(f func(s *fakeStarter)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// last is the pool started last.
func (s *fakeStarter) last() *fakePool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pools) == 0 {
		return nil
	}
	return s.pools[len(s.pools)-1]
}

// fakePool is a pool of spec.Workers pretend workers with pids 1000, 1001…
type fakePool struct {
	spec     supervisor.PoolSpec
	hold     chan struct{} // if set, WaitUp waits for it (or ctx)
	upErr    error         // WaitUp fails with it
	adopted  []supervisor.WorkerRecord
	once     sync.Once
	stopped  chan struct{}
	detached atomic.Bool
	onStop   func() // if set, runs as Stop begins: what the world looks like as the pool drains
}

func (p *fakePool) Release() string { return p.spec.Release }
func (p *fakePool) Stop() {
	p.once.Do(func() {
		if p.onStop != nil {
			p.onStop()
		}
		close(p.stopped)
	})
}
func (p *fakePool) Detach()                           { p.detached.Store(true) }
func (p *fakePool) StopAccepting(time.Duration) error { return nil }
func (p *fakePool) Warm(context.Context, supervisor.Warmup) supervisor.WarmResult {
	return supervisor.WarmResult{} // the fake's workers serve nothing
}

func (p *fakePool) WaitUp(ctx context.Context, _ time.Duration) error {
	if p.hold != nil {
		select {
		case <-p.hold:
		case <-ctx.Done():
			p.Stop()
			return fmt.Errorf("%w: %w", supervisor.ErrNotUp, ctx.Err())
		}
	}
	if p.upErr != nil {
		p.Stop() // as a pool does with what it started
		return p.upErr
	}
	return nil
}

func (p *fakePool) Status() []supervisor.WorkerStatus {
	return make([]supervisor.WorkerStatus, p.spec.Workers)
}

func (p *fakePool) Records() []supervisor.WorkerRecord {
	if p.isStopped() {
		return nil
	}
	if p.adopted != nil {
		return p.adopted
	}
	var out []supervisor.WorkerRecord
	for i := 0; i < p.spec.Workers; i++ {
		out = append(out, supervisor.WorkerRecord{Index: i, PID: 1000 + i})
	}
	return out
}

func (p *fakePool) isStopped() bool {
	select {
	case <-p.stopped:
		return true
	default:
		return false
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// testApp is an App on fakes, with its store in a temporary directory.
type testApp struct {
	*App
	t       *testing.T
	repo    *fakeRepo
	store   *faultyStore
	starter *fakeStarter
	logs    *syncBuf // the app's log, text
	stop    context.CancelFunc
}

func testConfig() *config.App {
	cfg := config.DefaultApp("hello")
	cfg.Listen = []string{"127.0.0.1:1"}
	cfg.Workers = 2
	cfg.Start = "./run"
	cfg.Build = ""
	cfg.Health.Preflight = true
	cfg.Health.MinUptime = time.Millisecond
	cfg.Health.Timeout = 5 * time.Second
	cfg.DrainTimeout = time.Second
	return cfg
}

func newTestApp(t *testing.T, cfg *config.App) *testApp {
	t.Helper()
	return newTestAppOn(t, context.Background(), cfg)
}

// newTestAppOn is a test app whose operations run on ctx, as a daemon's do
// on its own.
func newTestAppOn(t *testing.T, ctx context.Context, cfg *config.App) *testApp {
	t.Helper()
	dir := t.TempDir()
	st, err := releases.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	work, stop := context.WithCancel(ctx)
	ta := &testApp{t: t, repo: newFakeRepo(), store: &faultyStore{Store: st}, starter: &fakeStarter{}, logs: &syncBuf{}, stop: stop}
	ta.App = &App{
		name: cfg.Name, dir: dir, repo: ta.repo, store: ta.store, starter: ta.starter,
		workerLog:   nopCloser{io.Discard},
		log:         slog.New(slog.NewTextHandler(ta.logs, nil)).With("app", cfg.Name),
		lockTimeout: time.Minute, waitReport: 10 * time.Second, watchEvery: time.Second,
		work: work,
	}
	ta.start(cfg, nil)
	t.Cleanup(func() {
		stop()
		ta.close("test")
	})
	return ta
}

// withLive gives the app release v1 of commit "c1", live on the branch, and
// starts its pool (blue) as the daemon's start does.
func (ta *testApp) withLive() *fakePool {
	ta.t.Helper()
	ta.repo.addCommit("c1", "first")
	ta.repo.refs[branchRef("main")] = "c1"
	rel := ta.addRelease("c1", releases.Live)
	if err := ta.store.SetCurrent(rel.ID); err != nil {
		ta.t.Fatal(err)
	}
	if err := ta.resume(context.Background()); err != nil {
		ta.t.Fatal(err)
	}
	blue := ta.starter.last()
	if blue == nil || blue.Release() != rel.ID {
		ta.t.Fatalf("resume started %v, want a pool of %s", blue, rel.ID)
	}
	return blue
}

// addRelease stores a release of rev with status, and its directory.
func (ta *testApp) addRelease(rev string, status releases.Status) *releases.Release {
	ta.t.Helper()
	rel := &releases.Release{Revision: rev, Branch: "main", Pusher: "alice", Message: "msg " + rev, Start: "./run", Workers: 2}
	if err := ta.store.Create(rel); err != nil {
		ta.t.Fatal(err)
	}
	rel.Status = status
	if err := ta.store.Store.Save(rel); err != nil {
		ta.t.Fatal(err)
	}
	return rel
}

func (ta *testApp) current() string {
	id, _ := ta.store.Current()
	return id
}

func (ta *testApp) status(id string) releases.Status {
	ta.t.Helper()
	rel, err := ta.store.Get(id)
	if err != nil {
		ta.t.Fatal(err)
	}
	return rel.Status
}

// inTurn runs f as an operation of the app and returns its error.
func (ta *testApp) inTurn(out io.Writer, f func(j *job) error) error {
	return ta.do(context.Background(), &op{what: "test", cancelable: true, pr: newProgress(out), run: f})
}

var errInjected = errors.New("injected failure")

func contains(t *testing.T, what, s, want string) {
	t.Helper()
	if !strings.Contains(s, want) {
		t.Fatalf("%s: %q does not contain %q", what, s, want)
	}
}
