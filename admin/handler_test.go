package admin

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/hooks/gitserver"
)

const (
	aliceToken = "alice-s3cret"
	bobToken   = "bob-s3cret"
)

// newHandler is a Handler with alice's and bob's tokens in its tokens
// file, a page at / that names its user, and serving as up says.
func newHandler(t *testing.T, public bool) (*Handler, *atomic.Bool) {
	t.Helper()
	tokens := filepath.Join(t.TempDir(), "tokens")
	lines := gitserver.HashToken("alice", aliceToken) + "\n" + gitserver.HashToken("bob", bobToken) + "\n"
	if err := os.WriteFile(tokens, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	up := &atomic.Bool{}
	up.Store(true)
	h := &Handler{
		Metrics: NewMetrics(nil),
		Serving: up.Load,
		Page: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "page for "+User(r.Context())+" at "+r.URL.Path)
		}),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	h.Configure(config.HTTPAdmin{Listen: "127.0.0.1:0", TokensFile: tokens, MetricsPublic: public})
	return h, up
}

// get requests path from h with token as the basic-auth password ("" for none).
func get(h http.Handler, path, token string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", path, nil)
	if token != "" {
		r.SetBasicAuth("anyone", token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func TestEveryPathNeedsATokenOfTheTokensFile(t *testing.T) {
	h, _ := newHandler(t, false)
	for _, path := range []string{"/metrics", "/healthz", "/", "/apps/hello", "/metrics/"} {
		for _, token := range []string{"", "wrong", strings.ToUpper(aliceToken)} {
			rec := get(h, path, token)
			if rec.Code != http.StatusUnauthorized || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("%s with token %q: HTTP %d %q", path, token, rec.Code, rec.Header().Get("WWW-Authenticate"))
			}
			if strings.Contains(rec.Body.String(), "deployer_") || strings.Contains(rec.Body.String(), "page") {
				t.Errorf("%s with token %q leaked: %s", path, token, rec.Body)
			}
		}
	}
}

func TestAPusherTokenOpensMetricsHealthAndThePage(t *testing.T) {
	h, up := newHandler(t, false)
	if rec := get(h, "/metrics", aliceToken); rec.Code != 200 || !strings.Contains(rec.Body.String(), "deployer_build_info{") {
		t.Fatalf("/metrics: HTTP %d\n%s", rec.Code, rec.Body)
	}
	if rec := get(h, "/healthz", bobToken); rec.Code != 200 || rec.Body.String() != "ok\n" {
		t.Fatalf("/healthz: HTTP %d %q", rec.Code, rec.Body)
	}
	up.Store(false)
	if rec := get(h, "/healthz", bobToken); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz of a daemon not serving: HTTP %d %q", rec.Code, rec.Body)
	}
	if rec := get(h, "/apps/hello", aliceToken); rec.Code != 200 || rec.Body.String() != "page for alice at /apps/hello" {
		t.Fatalf("page: HTTP %d %q", rec.Code, rec.Body)
	}
	h.Page = nil
	if rec := get(h, "/", aliceToken); rec.Code != http.StatusNotFound {
		t.Fatalf("/ without a page: HTTP %d", rec.Code)
	}
}

func TestMetricsPublicOpensOnlyMetricsAndHealthz(t *testing.T) {
	h, _ := newHandler(t, true)
	if rec := get(h, "/metrics", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), "deployer_build_info{") {
		t.Fatalf("public /metrics: HTTP %d", rec.Code)
	}
	if rec := get(h, "/healthz", ""); rec.Code != 200 || rec.Body.String() != "ok\n" {
		t.Fatalf("public /healthz: HTTP %d %q", rec.Code, rec.Body)
	}
	for _, path := range []string{"/", "/apps/hello", "/metrics/", "/healthz/x", "/metricsx"} {
		if rec := get(h, path, ""); rec.Code != http.StatusUnauthorized {
			t.Errorf("%s without a token: HTTP %d %q", path, rec.Code, rec.Body)
		}
	}
	if rec := get(h, "/", bobToken); rec.Code != 200 || rec.Body.String() != "page for bob at /" {
		t.Fatalf("page with a token: HTTP %d %q", rec.Code, rec.Body)
	}

	// Public without a tokens file: the rest is shut to everyone.
	h.Configure(config.HTTPAdmin{MetricsPublic: true})
	if rec := get(h, "/", aliceToken); rec.Code != http.StatusUnauthorized {
		t.Fatalf("page with no tokens file: HTTP %d", rec.Code)
	}
	// A config reload that makes metrics private closes them at once.
	h.Configure(config.HTTPAdmin{})
	if rec := get(h, "/metrics", ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("/metrics after metrics_public was turned off: HTTP %d", rec.Code)
	}
}

func TestAnUnconfiguredHandlerRefusesEverything(t *testing.T) {
	h := &Handler{Metrics: NewMetrics(nil), Serving: func() bool { return true }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, path := range []string{"/metrics", "/healthz", "/"} {
		if rec := get(h, path, aliceToken); rec.Code != http.StatusUnauthorized {
			t.Errorf("%s: HTTP %d", path, rec.Code)
		}
	}
}
