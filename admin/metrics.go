package admin

import (
	"net/http"

	"github.com/deployer/deployer/internal/buildinfo"
	"github.com/deployer/deployer/releases"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Results of an operation, the "result" label of the operation counters.
const (
	ResultOK     = "ok"
	ResultFailed = "failed"
)

// operations are the ledger events counted by result, each with its counter's name.
var operations = map[string]string{
	"deploy":   "deployer_deploys_total",
	"rollback": "deployer_rollbacks_total",
	"reload":   "deployer_reloads_total",
}

// phases are the steps of an operation in the ledger's events (Event.Phases).
var phases = []string{"receive", "checkout", "build", "ship", "preflight", "green"}

// durationBuckets span a checkout of a few milliseconds to a build of half
// an hour.
var durationBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}

// Metrics are the daemon's metrics, on a registry of their own.
type Metrics struct {
	reg      *prometheus.Registry
	ops      map[string]*prometheus.CounterVec // by ledger event: deploy, rollback, reload
	phases   *prometheus.HistogramVec
	duration *prometheus.HistogramVec
	handler  http.Handler
	state    *stateCollector // nil without a Source
}

// NewMetrics registers the operation counters and histograms, build info,
// the Go runtime's and the process's metrics, and, if src is not nil, the
// gauges read from src at every scrape.
func NewMetrics(src Source) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ops: map[string]*prometheus.CounterVec{},
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "deployer_phase_duration_seconds",
			Help:    "Duration of each step of a deploy, rollback or reload (receive, checkout, build, ship, preflight, green), failed ones included.",
			Buckets: durationBuckets,
		}, []string{"app", "phase"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "deployer_operation_duration_seconds",
			Help:    "Duration of a successful deploy, rollback or reload, from its start to the cut-over.",
			Buckets: durationBuckets,
		}, []string{"app", "operation"}),
	}
	for op, name := range operations {
		m.ops[op] = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: name,
			Help: "Operations of kind " + op + " recorded in the ledger, by app and result (ok, failed).",
		}, []string{"app", "result"})
		m.reg.MustRegister(m.ops[op])
	}
	info := buildinfo.Get()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "deployer_build_info",
		Help:        "The deployer binary that serves: always 1.",
		ConstLabels: prometheus.Labels{"version": info.Version, "go_version": info.GoVersion},
	})
	build.Set(1)
	m.reg.MustRegister(m.phases, m.duration, build,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if src != nil {
		m.state = newStateCollector(src)
		m.reg.MustRegister(m.state)
	}
	// What could be gathered is served: one app's unreadable releases
	// must not hide every other metric.
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return m
}

// AddApps makes the operation counters and histograms of apps exist, at
// 0, so their series are there before the app's first operation: then
// increase() and rate() count that first one too. Those of an app already
// known are left as they are.
func (m *Metrics) AddApps(apps ...string) {
	for _, app := range apps {
		for op, c := range m.ops {
			c.WithLabelValues(app, ResultOK)
			c.WithLabelValues(app, ResultFailed)
			m.duration.WithLabelValues(app, op)
		}
		for _, phase := range phases {
			m.phases.WithLabelValues(app, phase)
		}
	}
}

// Observe counts a ledger event of app: a deploy, rollback or reload as
// ok, a failure as failed under the operation it is of (Event.Of), each
// with the durations of the steps that ran; other events (cleanup,
// recover, stop) are not counted. Any event may have changed the app's
// releases on disk, so their disk use is measured afresh at the next
// scrape. It never waits for a scrape (deployer.Options.OnEvent).
func (m *Metrics) Observe(app string, e releases.Event) {
	if m.state != nil {
		m.state.du.changed(app)
	}
	op, result := e.Event, ResultOK
	if e.Event == "failure" {
		op, result = e.Of, ResultFailed
	}
	c, ok := m.ops[op]
	if !ok {
		return
	}
	c.WithLabelValues(app, result).Inc()
	for phase, secs := range e.Phases {
		m.phases.WithLabelValues(app, phase).Observe(secs)
	}
	if result == ResultOK && e.Seconds > 0 {
		m.duration.WithLabelValues(app, op).Observe(e.Seconds)
	}
}

// Handler serves the metrics in Prometheus's exposition format.
func (m *Metrics) Handler() http.Handler { return m.handler }
