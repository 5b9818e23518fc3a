package deployer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

// newTestDaemon is a daemon running the test apps made by the add calls.
func newTestDaemon(t *testing.T) (*Daemon, func(cfg *config.App) *testApp) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	notify, err := supervisor.ListenNotify(filepath.Join(cfg.DataDir, "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), apps: map[string]*App{}, ctx: ctx, cancel: cancel, notify: notify}
	t.Cleanup(func() {
		d.mu.Lock()
		closed := d.closed
		d.mu.Unlock()
		if !closed {
			d.Shutdown(context.Background())
		}
	})
	return d, func(acfg *config.App) *testApp {
		ta := newTestAppOn(t, ctx, acfg)
		d.apps[acfg.Name] = ta.App
		cfg.Apps[acfg.Name] = acfg
		return ta
	}
}

func appConfig(name string) *config.App {
	cfg := testConfig()
	cfg.Name = name
	return cfg
}

// TestClientThatLeavesGetsItsErrorWhileTheOperationCarriesOn: run returns
// the client's error at once; the operation ends on its own and Shutdown
// waits for it.
func TestClientThatLeavesGetsItsErrorWhileTheOperationCarriesOn(t *testing.T) {
	d, add := newTestDaemon(t)
	add(appConfig("hello"))
	b := newBlocker()
	ctx, leave := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		res <- d.run(ctx, "hello", io.Discard, func(a *App, wait context.Context, w io.Writer) error {
			return a.do(wait, &op{what: "long", cancelable: true, pr: newProgress(w), run: b.run})
		})
	}()
	<-b.started
	leave()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}
	shut := make(chan error, 1)
	go func() { shut <- d.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned while an operation ran: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(b.release)
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if err := d.Deploy(context.Background(), "hello", Push{}, io.Discard); !errors.Is(err, ErrClosed) {
		t.Fatalf("deploy after shutdown: %v", err)
	}
}

// TestShutdownCancelsRunningOperationsAtItsDeadlineAndStopsEveryPool, and
// records the stop in each app's ledger.
func TestShutdownCancelsRunningOperationsAtItsDeadlineAndStopsEveryPool(t *testing.T) {
	d, add := newTestDaemon(t)
	ta := add(appConfig("hello"))
	blue := ta.withLive()
	b := newBlocker()
	res := make(chan error, 1)
	go func() {
		res <- d.run(context.Background(), "hello", io.Discard, func(a *App, wait context.Context, w io.Writer) error {
			return a.do(wait, &op{what: "long", cancelable: true, run: b.run})
		})
	}()
	<-b.started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err := d.Shutdown(ctx)
	if err == nil || !strings.HasPrefix(err.Error(), "shutdown: cancelled running deploys") {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-res; err == nil {
		t.Fatal("the running operation was not stopped")
	}
	if !blue.isStopped() {
		t.Fatal("the live pool still runs")
	}
	if e := ta.store.LastEvent("stop"); e == nil || e.By != "shutdown" {
		t.Fatalf("ledger: %+v", e)
	}
}

// TestDaemonAnswersStatusReleasesAndCancelPerApp.
func TestDaemonAnswersStatusReleasesAndCancelPerApp(t *testing.T) {
	d, add := newTestDaemon(t)
	add(appConfig("beta"))
	hello := add(appConfig("hello"))
	hello.withLive()
	st := d.Status()
	if len(st) != 2 || st[0].App != "beta" || st[1].App != "hello" || st[1].Live != "v1" || len(st[1].Workers) != 2 || st[0].Live != "" {
		t.Fatalf("status %+v", st)
	}
	list, live, err := d.Releases("hello")
	if err != nil || live != "v1" || len(list) != 1 {
		t.Fatalf("releases %v %s %v", list, live, err)
	}
	if _, _, err := d.Releases("nope"); !errors.Is(err, ErrUnknownApp) {
		t.Fatalf("releases of an unknown app: %v", err)
	}
	if _, err := d.Cancel("nope", "bob"); !errors.Is(err, ErrUnknownApp) {
		t.Fatalf("cancel of an unknown app: %v", err)
	}
	if _, err := d.Cancel("hello", "bob"); !errors.Is(err, ErrNothingToCancel) {
		t.Fatalf("cancel with nothing running: %v", err)
	}
	if err := d.Rollback(context.Background(), "nope", "", "bob", io.Discard); !errors.Is(err, ErrUnknownApp) {
		t.Fatalf("rollback of an unknown app: %v", err)
	}
}

// TestReloadOfEveryAppSkipsAppsWithNothingLive.
func TestReloadOfEveryAppSkipsAppsWithNothingLive(t *testing.T) {
	d, add := newTestDaemon(t)
	idle := add(appConfig("beta"))
	hello := add(appConfig("hello"))
	old := hello.withLive()
	if err := d.Reload(context.Background(), "", "SIGUSR2", io.Discard); err != nil {
		t.Fatal(err)
	}
	if hello.starter.last() == old {
		t.Fatal("hello was not reloaded")
	}
	waitUntil(t, "the old pool to drain", old.isStopped)
	if idle.starter.last() != nil {
		t.Fatal("an app with nothing live got workers")
	}
	hello.starter.set(func(s *fakeStarter) { s.startErr = errInjected })
	if err := d.Reload(context.Background(), "", "SIGUSR2", io.Discard); err == nil || !strings.HasPrefix(err.Error(), "hello: ") {
		t.Fatalf("failing reload: %v", err)
	}
	res, err := d.Cleanup(context.Background(), "hello", 1, true, "bob")
	if err != nil || !res.DryRun {
		t.Fatalf("cleanup: %+v %v", res, err)
	}
}

// TestDaemonStartsAndStopsRealAppsWithNothingDeployed: New opens each
// app's repository and sockets, Start resumes them (nothing live: no
// worker) and schedules cleanups, Shutdown closes it all.
func TestDaemonStartsAndStopsRealAppsWithNothingDeployed(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	app := config.DefaultApp("hello")
	app.Listen = []string{"127.0.0.1:0"}
	cfg.Apps["hello"] = app
	d, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	d.Start()
	a, err := d.App("hello")
	if err != nil || a.Name() != "hello" || a.Branch() != "main" || a.Repo().Path() != filepath.Join(cfg.DataDir, "apps/hello/repo.git") {
		t.Fatalf("app %v %v", a, err)
	}
	if st := d.Status(); len(st) != 1 || st[0].Live != "" || len(st[0].Workers) != 0 {
		t.Fatalf("status %+v", st)
	}
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := a.store.LastEvent("stop"); e == nil {
		t.Fatal("the stop was not recorded")
	}
}

// TestStatusShowsTheLastDeployFromTheLedger.
func TestStatusShowsTheLastDeployFromTheLedger(t *testing.T) {
	d, add := newTestDaemon(t)
	ta := add(appConfig("hello"))
	ta.withLive()
	ta.record(releases.Event{Event: "deploy", Release: "v1", By: "alice"})
	ta.record(releases.Event{Event: "cleanup", By: "schedule"})
	if st := d.Status(); st[0].LastDeploy == nil || st[0].LastDeploy.Event != "deploy" {
		t.Fatalf("last deploy %+v", st[0].LastDeploy)
	}
}

// TestHistoryIsTheWholeLedgerOldestFirst: the status page's timeline
// reads every kind of event, in the order written, and an unknown app is
// ErrUnknownApp.
func TestHistoryIsTheWholeLedgerOldestFirst(t *testing.T) {
	d, add := newTestDaemon(t)
	ta := add(appConfig("hello"))
	ta.record(releases.Event{Event: "deploy", Release: "v1", By: "alice", Phases: map[string]float64{"build": 1.5}})
	ta.record(releases.Event{Event: "failure", Of: "deploy", Release: "v2", By: "bob", Detail: "build failed"})
	ta.record(releases.Event{Event: "cleanup", By: "schedule"})
	got, err := d.History("hello")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range got {
		kinds = append(kinds, e.Event)
	}
	if strings.Join(kinds, ",") != "deploy,failure,cleanup" || got[0].Phases["build"] != 1.5 || got[1].Of != "deploy" {
		t.Fatalf("history: %+v", got)
	}
	if _, err := d.History("nope"); !errors.Is(err, ErrUnknownApp) {
		t.Fatalf("history of an unknown app: %v", err)
	}
}

// TestQuiesceWaitsForOperationsAndDetachLetsEveryAppGo: Quiesce turns new
// operations away and waits for the running one (or gives up with ctx);
// Unquiesce takes them again; Detach lets go of every app's workers without
// stopping them.
func TestQuiesceWaitsForOperationsAndDetachLetsEveryAppGo(t *testing.T) {
	d, add := newTestDaemon(t)
	ta := add(appConfig("hello"))
	blue := ta.withLive()
	b := newBlocker()
	res := make(chan error, 1)
	go func() {
		res <- d.run(context.Background(), "hello", io.Discard, func(a *App, wait context.Context, w io.Writer) error {
			return a.do(wait, &op{what: "long", run: b.run})
		})
	}()
	<-b.started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := d.Quiesce(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Quiesce with an operation running past ctx: %v", err)
	}
	if err := d.Reload(context.Background(), "hello", "bob", io.Discard); !errors.Is(err, ErrClosed) {
		t.Fatalf("reload while quiesced: %v", err)
	}
	d.Unquiesce()
	close(b.release)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(context.Background(), "hello", "bob", io.Discard); err != nil {
		t.Fatalf("reload after Unquiesce: %v", err)
	}
	fresh := ta.starter.last()
	if err := d.Quiesce(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.Detach()
	if fresh.isStopped() || !fresh.detached.Load() {
		t.Fatal("Detach stopped the live workers, or did not let them go")
	}
	if !blue.isStopped() && !blue.detached.Load() {
		t.Fatal("the pool the reload replaced neither drained nor was let go mid-drain")
	}
	if err := d.Deploy(context.Background(), "hello", Push{}, io.Discard); !errors.Is(err, ErrClosed) {
		t.Fatalf("deploy after Detach: %v", err)
	}
}

// TestLogsShowsTheWorkerLogTailAndBuildLogs.
func TestLogsShowsTheWorkerLogTailAndBuildLogs(t *testing.T) {
	d, add := newTestDaemon(t)
	ta := add(appConfig("hello"))
	var out syncBuf
	if err := d.Logs(context.Background(), "hello", "", 10, false, &out); err != nil || out.String() != "" {
		t.Fatalf("no worker log yet: %q %v", out.String(), err)
	}
	os.MkdirAll(filepath.Join(ta.dir, "logs"), 0o755)
	os.WriteFile(filepath.Join(ta.dir, "logs", "workers.log"), []byte("a\nb\nc\n"), 0o644)
	if err := d.Logs(context.Background(), "hello", "", 2, false, &out); err != nil || out.String() != "b\nc\n" {
		t.Fatalf("tail: %q %v", out.String(), err)
	}
	ta.addRelease("c1", "failed")
	os.WriteFile(ta.store.BuildLog("v1"), []byte("-----> Building\n"), 0o644)
	out = syncBuf{}
	if err := d.Logs(context.Background(), "hello", "1", 0, false, &out); err != nil || out.String() != "-----> Building\n" {
		t.Fatalf("build log: %q %v", out.String(), err)
	}
	if err := d.Logs(context.Background(), "hello", "v9", 0, false, &out); err == nil {
		t.Fatal("a build log of a release that does not exist")
	}
}
