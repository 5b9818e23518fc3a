package admin

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// scrape GETs /metrics from h and returns every sample by its series as
// exposed, such as `deployer_deploys_total{app="hello",result="ok"}`.
func scrape(t *testing.T, h http.Handler) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d: %s", rec.Code, rec.Body)
	}
	return parseExposition(t, rec.Body.String())
}

// parseExposition reads Prometheus's text format: "series value" lines.
func parseExposition(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("not a sample: %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("not a sample: %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// want checks that each series has its value.
func want(t *testing.T, got map[string]float64, series map[string]float64) {
	t.Helper()
	for s, v := range series {
		g, ok := got[s]
		switch {
		case !ok:
			t.Errorf("no series %s", s)
		case g != v:
			t.Errorf("%s = %v, want %v", s, g, v)
		}
	}
}
