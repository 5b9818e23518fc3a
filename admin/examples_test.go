package admin

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
	"go.yaml.in/yaml/v3"
)

// The examples in examples/monitoring are checked against what the daemon
// serves: a renamed metric must not leave a dashboard or an alert empty.

const monitoring = "../examples/monitoring"

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Annotations   struct {
		List []struct {
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		GridPos *struct {
			W, H int
		} `json:"gridPos"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// exprs are every PromQL expression of the dashboard and the alert rules,
// each with where it is.
func monitoringExprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	b, err := os.ReadFile(filepath.Join(monitoring, "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion == 0 || len(d.Panels) == 0 {
		t.Fatalf("grafana-dashboard.json is not a dashboard: %+v", d)
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] || p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q: id %d twice, or no size", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for i, tg := range p.Targets {
			out[fmt.Sprintf("dashboard panel %q query %d", p.Title, i)] = tg.Expr
		}
	}
	for i, a := range d.Annotations.List {
		if a.Expr != "" {
			out[fmt.Sprintf("dashboard annotation %d", i)] = a.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Definition != "" {
			out["dashboard variable "+v.Name] = v.Definition
		}
	}

	b, err = os.ReadFile(filepath.Join(monitoring, "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert] = r.Expr
		}
	}
	return out
}

var metricName = regexp.MustCompile(`\bdeployer_[a-z_]+`)

func TestMonitoringExamplesNameOnlyMetricsTheDaemonServes(t *testing.T) {
	src := &fakeSource{
		status:   []deployer.Status{{App: "hello", Live: "v1", Workers: workers("v1", supervisor.Running)}},
		releases: map[string][]*releases.Release{"hello": {{ID: "v1", Status: releases.Live, Revision: "abc"}}},
		live:     map[string]string{"hello": "v1"},
		dirs:     map[string]string{"hello": t.TempDir()},
	}
	m := NewMetrics(src)
	m.AddApps("hello")
	m.Observe("hello", releases.Event{Event: "deploy", Seconds: 1, Phases: map[string]float64{"build": 1}})
	served := map[string]bool{}
	for series := range scrape(t, m.Handler()) {
		name, _, _ := strings.Cut(series, "{")
		served[name] = true
	}
	used := map[string]bool{}
	for where, expr := range monitoringExprs(t) {
		for _, name := range metricName.FindAllString(expr, -1) {
			used[name] = true
			if !served[name] {
				t.Errorf("%s names %s, which the daemon does not serve: %s", where, name, expr)
			}
		}
	}
	// Each metric is on the dashboard or in an alert (a histogram by its buckets).
	for name := range served {
		if strings.HasPrefix(name, "deployer_") && !used[name] && !used[strings.TrimSuffix(name, "_count")+"_bucket"] &&
			!strings.HasSuffix(name, "_sum") && !strings.HasSuffix(name, "_bucket") {
			t.Errorf("%s is on neither the dashboard nor an alert", name)
		}
	}
}

// grafanaVars stand in for the dashboard's variables, so its queries parse
// as plain PromQL.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1d", "$window", "1d", "$app", ".*")

func TestMonitoringExamplesParseAndTheAlertsPassTheirUnitTests(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian: prometheus; .ci/run installs it)")
	}
	// promtool parses rule files: the dashboard's queries go in one as
	// recording rules.
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for where, expr := range monitoringExprs(t) {
		if strings.HasPrefix(where, "dashboard variable") {
			continue // label_values() is Grafana's, not PromQL
		}
		q, _ := json.Marshal(grafanaVars.Replace(expr))
		fmt.Fprintf(&b, "      - record: dashboard:query\n        expr: %s\n", q)
	}
	dash := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(dash, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"check", "rules", dash},
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = monitoring
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
