package admin

import (
	"sync"

	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
	"github.com/prometheus/client_golang/prometheus"
)

// Source is what the gauges are read from at every scrape: the daemon
// (*deployer.Daemon). Its methods must not wait for a running operation.
type Source interface {
	// Status is every configured app with its workers.
	Status() []deployer.Status
	// Releases is app's releases and the live one's id.
	Releases(app string) ([]*releases.Release, string, error)
	// ReleasesDir is the directory of app's release trees.
	ReleasesDir(app string) (string, error)
}

// workerStates are the states deployer_workers always has a series for.
var workerStates = []supervisor.WorkerState{
	supervisor.Starting, supervisor.Running, supervisor.Backoff, supervisor.CrashLoop, supervisor.Draining,
}

// releaseStatuses are the statuses deployer_releases always has a series for.
var releaseStatuses = []releases.Status{
	releases.Building, releases.Live, releases.Retired, releases.RolledBack, releases.Failed, releases.Pruned,
}

var (
	workersDesc = prometheus.NewDesc("deployer_workers",
		"Workers of the app by state (starting, running, backoff, crashloop, draining), draining pools included.",
		[]string{"app", "state"}, nil)
	restartsDesc = prometheus.NewDesc("deployer_worker_restarts_total",
		"Restarts of the app's workers after a crash, as seen by scrapes: it grows by each rise of the restarts of the workers running, and does not fall when a deploy replaces them.",
		[]string{"app"}, nil)
	releasesDesc = prometheus.NewDesc("deployer_releases",
		"Releases of the app with metadata on disk, by status (a pruned one has its metadata only).",
		[]string{"app", "status"}, nil)
	bytesDesc = prometheus.NewDesc("deployer_releases_bytes",
		"Disk used by the app's release trees (apps/APP/releases), as du counts it; measured at most once a minute, and again after the app's next ledger event.",
		[]string{"app"}, nil)
	liveDesc = prometheus.NewDesc("deployer_live_release_info",
		"The app's live release and its revision: always 1.",
		[]string{"app", "release", "revision"}, nil)
)

// stateCollector reads the gauges from a Source at scrape time.
type stateCollector struct {
	src Source
	du  *diskUsage

	mu       sync.Mutex
	restarts map[string]*restartCount // by app
}

// restartCount turns the restarts of the workers running, which fall when
// a deploy replaces them, into a counter that only grows.
type restartCount struct {
	last  int     // the sum of the running workers' restarts at the last scrape
	total float64 // every rise of it
}

func newStateCollector(src Source) *stateCollector {
	return &stateCollector{src: src, du: newDiskUsage(), restarts: map[string]*restartCount{}}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{workersDesc, restartsDesc, releasesDesc, bytesDesc, liveDesc} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.src.Status() {
		c.collectWorkers(ch, st)
		c.collectReleases(ch, st.App)
	}
}

func (c *stateCollector) collectWorkers(ch chan<- prometheus.Metric, st deployer.Status) {
	byState := map[supervisor.WorkerState]int{}
	for _, s := range workerStates {
		byState[s] = 0
	}
	sum := 0
	for _, w := range st.Workers {
		byState[w.State]++ // a state not listed (stopped, for an instant) gets a series of its own
		sum += w.Restarts
	}
	for s, n := range byState {
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(n), st.App, string(s))
	}
	ch <- prometheus.MustNewConstMetric(restartsDesc, prometheus.CounterValue, c.restartsOf(st.App, sum), st.App)
}

// restartsOf adds the rise of app's running workers' restarts since the
// last scrape, and returns the count.
func (c *stateCollector) restartsOf(app string, sum int) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.restarts[app]
	if r == nil {
		r = &restartCount{}
		c.restarts[app] = r
	}
	if sum > r.last {
		r.total += float64(sum - r.last)
	}
	r.last = sum
	return r.total
}

func (c *stateCollector) collectReleases(ch chan<- prometheus.Metric, app string) {
	list, live, err := c.src.Releases(app)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(releasesDesc, err)
		return
	}
	byStatus := map[releases.Status]int{}
	for _, s := range releaseStatuses {
		byStatus[s] = 0
	}
	for _, r := range list {
		byStatus[r.Status]++
		if r.ID == live {
			ch <- prometheus.MustNewConstMetric(liveDesc, prometheus.GaugeValue, 1, app, r.ID, r.Revision)
		}
	}
	for s, n := range byStatus {
		ch <- prometheus.MustNewConstMetric(releasesDesc, prometheus.GaugeValue, float64(n), app, string(s))
	}
	dir, err := c.src.ReleasesDir(app)
	if err == nil {
		var n int64
		if n, err = c.du.of(app, dir); err == nil {
			ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.GaugeValue, float64(n), app)
			return
		}
	}
	ch <- prometheus.NewInvalidMetric(bytesDesc, err)
}
