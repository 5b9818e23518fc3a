package admin

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// fakeSource is a daemon as the collector sees it.
type fakeSource struct {
	mu       sync.Mutex
	status   []deployer.Status
	releases map[string][]*releases.Release
	live     map[string]string
	dirs     map[string]string
}

func (f *fakeSource) Status() []deployer.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeSource) Releases(app string) ([]*releases.Release, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	list, ok := f.releases[app]
	if !ok {
		return nil, "", errors.New("list releases: permission denied")
	}
	return list, f.live[app], nil
}

func (f *fakeSource) ReleasesDir(app string) (string, error) { return f.dirs[app], nil }

func workers(release string, states ...supervisor.WorkerState) []supervisor.WorkerStatus {
	var out []supervisor.WorkerStatus
	for i, s := range states {
		out = append(out, supervisor.WorkerStatus{Index: i, PID: 1000 + i, Release: release, State: s})
	}
	return out
}

// newFakeCollector serves the gauges of src on a registry of their own.
func newFakeCollector(t *testing.T, src Source) (*stateCollector, http.Handler) {
	t.Helper()
	c := newStateCollector(src)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	return c, promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func TestGaugesAreReadFromTheDaemonAtScrapeTime(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "v2"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "v2", "bin"), make([]byte, 100<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	hello := workers("v2", supervisor.Running, supervisor.Running, supervisor.CrashLoop)
	hello[2].Restarts = 4
	hello = append(hello, workers("v1", supervisor.Draining)...)
	src := &fakeSource{
		status: []deployer.Status{
			{App: "hello", Live: "v2", Workers: hello},
			{App: "idle", Workers: []supervisor.WorkerStatus{}},
		},
		releases: map[string][]*releases.Release{
			"hello": {
				{ID: "v3", Status: releases.Failed, Revision: "c3"},
				{ID: "v2", Status: releases.Live, Revision: "b2b2b2b2"},
				{ID: "v1", Status: releases.Retired, Revision: "a1"},
				{ID: "v0", Status: releases.Pruned, Revision: "a0"},
			},
			"idle": {},
		},
		live: map[string]string{"hello": "v2"},
		dirs: map[string]string{"hello": dir, "idle": filepath.Join(t.TempDir(), "releases")},
	}
	os.Mkdir(src.dirs["idle"], 0o700)
	_, h := newFakeCollector(t, src)
	got := scrape(t, h)
	want(t, got, map[string]float64{
		`deployer_workers{app="hello",state="running"}`:   2,
		`deployer_workers{app="hello",state="crashloop"}`: 1,
		`deployer_workers{app="hello",state="draining"}`:  1,
		`deployer_workers{app="hello",state="starting"}`:  0,
		`deployer_workers{app="hello",state="backoff"}`:   0,
		`deployer_workers{app="idle",state="running"}`:    0,
		`deployer_workers{app="idle",state="crashloop"}`:  0,

		`deployer_worker_restarts_total{app="hello"}`: 4,
		`deployer_worker_restarts_total{app="idle"}`:  0,

		`deployer_releases{app="hello",status="live"}`:        1,
		`deployer_releases{app="hello",status="failed"}`:      1,
		`deployer_releases{app="hello",status="retired"}`:     1,
		`deployer_releases{app="hello",status="pruned"}`:      1,
		`deployer_releases{app="hello",status="rolled-back"}`: 0,
		`deployer_releases{app="hello",status="building"}`:    0,
		`deployer_releases{app="idle",status="live"}`:         0,

		`deployer_live_release_info{app="hello",release="v2",revision="b2b2b2b2"}`: 1,
	})
	for s := range got {
		if strings.HasPrefix(s, "deployer_live_release_info{") && !strings.Contains(s, `release="v2"`) {
			t.Errorf("a release that is not live is named live: %s", s)
		}
	}
	if b := got[`deployer_releases_bytes{app="hello"}`]; b < 100<<10 || b > 1<<20 {
		t.Errorf("releases bytes of hello: %v, want about 100KiB", b)
	}

	// A deploy replaces the workers: fewer restarts now, yet the counter
	// does not fall; restarts of the new workers add to it.
	src.mu.Lock()
	src.status[0].Workers = workers("v3", supervisor.Running, supervisor.Backoff)
	src.status[0].Workers[1].Restarts = 1
	src.mu.Unlock()
	want(t, scrape(t, h), map[string]float64{
		`deployer_worker_restarts_total{app="hello"}`:    4,
		`deployer_workers{app="hello",state="backoff"}`:  1,
		`deployer_workers{app="hello",state="draining"}`: 0,
	})
	src.mu.Lock()
	src.status[0].Workers[1].Restarts = 3
	src.mu.Unlock()
	want(t, scrape(t, h), map[string]float64{`deployer_worker_restarts_total{app="hello"}`: 6})
}

func TestReleasesBytesAreWalkedAtMostOncePerTTL(t *testing.T) {
	dir := t.TempDir()
	src := &fakeSource{
		status:   []deployer.Status{{App: "hello"}},
		releases: map[string][]*releases.Release{"hello": {}},
		dirs:     map[string]string{"hello": dir},
	}
	c, h := newFakeCollector(t, src)
	now := time.Unix(1_800_000_000, 0)
	c.du.now = func() time.Time { return now }
	walks := 0
	c.du.walk = func(d string) (int64, error) { walks++; return du(d) }

	before := scrape(t, h)[`deployer_releases_bytes{app="hello"}`]
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	now = now.Add(duEvery - time.Second)
	if got := scrape(t, h)[`deployer_releases_bytes{app="hello"}`]; got != before || walks != 1 {
		t.Fatalf("within the minute: %v bytes (was %v), %d walks", got, before, walks)
	}
	now = now.Add(2 * time.Second)
	if got := scrape(t, h)[`deployer_releases_bytes{app="hello"}`]; got < before+1<<20 || walks != 2 {
		t.Fatalf("after the minute: %v bytes (was %v), %d walks", got, before, walks)
	}
}

func TestALedgerEventMakesTheNextScrapeMeasureTheReleasesAgain(t *testing.T) {
	dir := t.TempDir()
	src := &fakeSource{
		status:   []deployer.Status{{App: "hello"}},
		releases: map[string][]*releases.Release{"hello": {}},
		dirs:     map[string]string{"hello": dir},
	}
	m := NewMetrics(src)
	before := scrape(t, m.Handler())[`deployer_releases_bytes{app="hello"}`]
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := scrape(t, m.Handler())[`deployer_releases_bytes{app="hello"}`]; got != before {
		t.Fatalf("measured again with no event: %v, was %v", got, before)
	}
	m.Observe("hello", releases.Event{Event: "deploy", Release: "v1"})
	if got := scrape(t, m.Handler())[`deployer_releases_bytes{app="hello"}`]; got < before+1<<20 {
		t.Fatalf("after a deploy: %v bytes, was %v", got, before)
	}
}

func TestDiskUseCountsAHardLinkedFileOnce(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), make([]byte, 256<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	one, err := du(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	two, err := du(dir)
	if err != nil || two != one {
		t.Fatalf("with a hard link: %d bytes (%v), without: %d", two, err, one)
	}
	if _, err := du(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing directory has a disk use")
	}
}

func TestAnAppWhoseReleasesCannotBeReadDoesNotHideTheOthers(t *testing.T) {
	src := &fakeSource{
		status: []deployer.Status{
			{App: "broken", Workers: workers("v1", supervisor.Running)},
			{App: "hello", Workers: workers("v1", supervisor.Running, supervisor.Running)},
		},
		releases: map[string][]*releases.Release{"hello": {{ID: "v1", Status: releases.Live, Revision: "abc"}}},
		live:     map[string]string{"hello": "v1"},
		dirs:     map[string]string{"hello": t.TempDir()},
	}
	_, h := newFakeCollector(t, src)
	want(t, scrape(t, h), map[string]float64{
		`deployer_workers{app="broken",state="running"}`:                      1,
		`deployer_workers{app="hello",state="running"}`:                       2,
		`deployer_live_release_info{app="hello",release="v1",revision="abc"}`: 1,
	})
}
