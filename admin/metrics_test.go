package admin

import (
	"strings"
	"testing"

	"github.com/deployer/deployer/releases"
)

func TestCountersOfAConfiguredAppExistAtZeroBeforeItsFirstOperation(t *testing.T) {
	m := NewMetrics(nil)
	m.AddApps("hello", "api")
	got := scrape(t, m.Handler())
	for _, app := range []string{"hello", "api"} {
		for _, name := range []string{"deployer_deploys_total", "deployer_rollbacks_total", "deployer_reloads_total"} {
			for _, result := range []string{"ok", "failed"} {
				want(t, got, map[string]float64{name + `{app="` + app + `",result="` + result + `"}`: 0})
			}
		}
		for _, phase := range []string{"receive", "checkout", "build", "ship", "preflight", "green"} {
			want(t, got, map[string]float64{
				`deployer_phase_duration_seconds_count{app="` + app + `",phase="` + phase + `"}`:            0,
				`deployer_phase_duration_seconds_bucket{app="` + app + `",phase="` + phase + `",le="+Inf"}`: 0,
			})
		}
		for _, op := range []string{"deploy", "rollback", "reload"} {
			want(t, got, map[string]float64{`deployer_operation_duration_seconds_count{app="` + app + `",operation="` + op + `"}`: 0})
		}
	}
	// Adding an app again (a config reload) keeps what was counted.
	m.Observe("hello", releases.Event{Event: "deploy", Release: "v1"})
	m.AddApps("hello", "api", "new")
	want(t, scrape(t, m.Handler()), map[string]float64{
		`deployer_deploys_total{app="hello",result="ok"}`:   1,
		`deployer_deploys_total{app="new",result="failed"}`: 0,
	})
}

func TestLedgerEventsAreCountedByOperationAndResultWithTheirDurations(t *testing.T) {
	m := NewMetrics(nil)
	m.AddApps("hello")
	phases := map[string]float64{"receive": 0.02, "checkout": 0.004, "build": 0.7, "preflight": 0.01, "green": 1.0}
	for _, e := range []releases.Event{
		{Event: "deploy", Release: "v1", Seconds: 1.8, Phases: phases},
		{Event: "deploy", Release: "v2", Seconds: 40, Phases: map[string]float64{"build": 35, "preflight": 2, "green": 3}},
		{Event: "failure", Of: "deploy", Release: "v3", Detail: "build failed"},
		{Event: "failure", Of: "deploy", Release: "v4", Phases: map[string]float64{"build": 3}},
		{Event: "rollback", Release: "v1", From: "v2", Seconds: 1.2, Phases: map[string]float64{"preflight": 0.2, "green": 1}},
		{Event: "failure", Of: "rollback", Release: "v2"},
		{Event: "reload", Release: "v1", Seconds: 1.1},
		{Event: "failure", Of: "reload", Release: "v1"},
		{Event: "failure", Of: "reload", Release: "v1"},
		// Not operations: not counted.
		{Event: "cleanup", Detail: "pruned v0"},
		{Event: "recover", Release: "v5"},
		{Event: "stop", By: "shutdown"},
		{Event: "failure", Release: "v9"}, // of no known operation
	} {
		m.Observe("hello", e)
	}
	got := scrape(t, m.Handler())
	want(t, got, map[string]float64{
		`deployer_deploys_total{app="hello",result="ok"}`:       2,
		`deployer_deploys_total{app="hello",result="failed"}`:   2,
		`deployer_rollbacks_total{app="hello",result="ok"}`:     1,
		`deployer_rollbacks_total{app="hello",result="failed"}`: 1,
		`deployer_reloads_total{app="hello",result="ok"}`:       1,
		`deployer_reloads_total{app="hello",result="failed"}`:   2,

		// Steps of failed operations count too: v4's build.
		`deployer_phase_duration_seconds_count{app="hello",phase="build"}`:            3,
		`deployer_phase_duration_seconds_sum{app="hello",phase="build"}`:              38.7,
		`deployer_phase_duration_seconds_bucket{app="hello",phase="build",le="1"}`:    1,
		`deployer_phase_duration_seconds_bucket{app="hello",phase="build",le="5"}`:    2,
		`deployer_phase_duration_seconds_bucket{app="hello",phase="build",le="+Inf"}`: 3,
		`deployer_phase_duration_seconds_count{app="hello",phase="green"}`:            3,
		`deployer_phase_duration_seconds_count{app="hello",phase="preflight"}`:        3,
		`deployer_phase_duration_seconds_count{app="hello",phase="checkout"}`:         1,
		`deployer_phase_duration_seconds_count{app="hello",phase="receive"}`:          1,

		// Whole operations: only those that went live.
		`deployer_operation_duration_seconds_count{app="hello",operation="deploy"}`:   2,
		`deployer_operation_duration_seconds_sum{app="hello",operation="deploy"}`:     41.8,
		`deployer_operation_duration_seconds_count{app="hello",operation="rollback"}`: 1,
		`deployer_operation_duration_seconds_count{app="hello",operation="reload"}`:   1,
	})
	for s := range got {
		if strings.Contains(s, `operation="failure"`) || strings.Contains(s, `operation="cleanup"`) || strings.Contains(s, `app="hello",result=""`) {
			t.Errorf("an event that is no operation was counted: %s", s)
		}
	}
}

func TestBuildInfoNamesTheVersionAndGo(t *testing.T) {
	got := scrape(t, NewMetrics(nil).Handler())
	n := 0
	for s, v := range got {
		if strings.HasPrefix(s, "deployer_build_info{") {
			n++
			if v != 1 || !strings.Contains(s, `go_version="go`) || !strings.Contains(s, `version="`) {
				t.Errorf("build info: %s %v", s, v)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d build info series", n)
	}
	if _, ok := got["process_open_fds"]; !ok {
		t.Error("no process metrics")
	}
}
