package statuspage

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer/deployer/admin"
	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/hooks/gitserver"
	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

const (
	aliceToken = "alice-s3cret"
	bobToken   = "bob-s3cret"
)

// fakeDaemon is the daemon as the page sees it.
type fakeDaemon struct {
	mu        sync.Mutex
	status    []deployer.Status
	releases  map[string][]*releases.Release
	live      map[string]string
	history   map[string][]releases.Event
	histReads int
	logs      map[string]string // by "app/id"
	rollbacks []string          // "app to by"
	rollErr   error
}

func (f *fakeDaemon) Status() []deployer.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeDaemon) Releases(app string) ([]*releases.Release, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	list, ok := f.releases[app]
	if !ok {
		return nil, "", fmt.Errorf("%w: %q", deployer.ErrUnknownApp, app)
	}
	return list, f.live[app], nil
}

func (f *fakeDaemon) History(app string) ([]releases.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.histReads++
	return append([]releases.Event(nil), f.history[app]...), nil
}

func (f *fakeDaemon) Logs(_ context.Context, app, build string, _ int, _ bool, out io.Writer) error {
	f.mu.Lock()
	text, ok := f.logs[app+"/"+build]
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("no build log for %s", build)
	}
	// In pieces, as a file is copied.
	for len(text) > 0 {
		n := min(len(text), 1000)
		io.WriteString(out, text[:n])
		text = text[n:]
	}
	return nil
}

func (f *fakeDaemon) Rollback(_ context.Context, app, to, by string, out io.Writer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rollbacks = append(f.rollbacks, app+" "+to+" "+by)
	if f.rollErr != nil {
		fmt.Fprintf(out, "-----> Rolling back %s to %s\n-----> rollback to %s refused at preflight\n", app, to, to)
		return f.rollErr
	}
	fmt.Fprintf(out, "-----> Rolling back %s from %s to %s, no rebuild\n", app, f.live[app], to)
	f.live[app] = to
	return nil
}

func (f *fakeDaemon) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.rollbacks...)
}

// epoch is the fake's now.
var epoch = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

// newFake is the app "hello" with v3 live (two workers, one of v2
// draining), v2 retired, v1 rolled back and v4 a failed build; and the app
// "idle" with nothing deployed.
func newFake() *fakeDaemon {
	rel := func(n int, st releases.Status, msg string) *releases.Release {
		return &releases.Release{ID: fmt.Sprintf("v%d", n), Number: n, Revision: fmt.Sprintf("%040d", n),
			Message: msg, Pusher: "alice", Status: st, Created: epoch.Add(time.Duration(n-10) * time.Minute), BuildSeconds: 1.5}
	}
	return &fakeDaemon{
		status: []deployer.Status{
			{App: "hello", Branch: "main", Listen: []string{"127.0.0.1:8080"}, Live: "v3", Workers: []supervisor.WorkerStatus{
				{Index: 0, PID: 4101, Release: "v3", State: supervisor.Running, Started: epoch.Add(-90 * time.Second)},
				{Index: 1, PID: 4102, Release: "v3", State: supervisor.CrashLoop, Started: epoch.Add(-5 * time.Second), Restarts: 7},
				{Index: 0, PID: 3901, Release: "v2", State: supervisor.Draining, Started: epoch.Add(-time.Hour), KillAt: epoch.Add(8 * time.Second)},
			}},
			{App: "idle", Branch: "main", Workers: []supervisor.WorkerStatus{}},
		},
		releases: map[string][]*releases.Release{
			"hello": {
				rel(4, releases.Failed, "broken <b>build</b>"),
				rel(3, releases.Live, "third: <script>alert(1)</script>\n\nbody"),
				rel(2, releases.Retired, "second"),
				rel(1, releases.RolledBack, "first"),
			},
			"idle": {},
		},
		live: map[string]string{"hello": "v3"},
		history: map[string][]releases.Event{"hello": {
			{Time: epoch.Add(-9 * time.Minute), Event: "deploy", Release: "v1", By: "alice", Detail: "0000001 first", Seconds: 2,
				Phases: map[string]float64{"receive": 0.1, "checkout": 0.1, "build": 1, "preflight": 0.2, "green": 0.5}},
			{Time: epoch.Add(-8 * time.Minute), Event: "deploy", Release: "v2", From: "v1", By: "alice", Detail: "0000002 second", Seconds: 4,
				Phases: map[string]float64{"receive": 0.1, "checkout": 0.1, "build": 3, "preflight": 0.2, "green": 0.5}},
			{Time: epoch.Add(-7 * time.Minute), Event: "deploy", Release: "v3", From: "v2", By: "alice", Detail: "0000003 third", Seconds: 2,
				Phases: map[string]float64{"receive": 0.1, "checkout": 0.1, "build": 1, "preflight": 0.2, "green": 0.5}},
			{Time: epoch.Add(-6 * time.Minute), Event: "failure", Of: "deploy", Release: "v4", By: "bob",
				Detail: "build failed: exit status 1 \x1b[31m<img src=x onerror=alert(2)>",
				Phases: map[string]float64{"receive": 0.1, "checkout": 0.1, "build": 0.4}},
			{Time: epoch.Add(-5 * time.Minute), Event: "cleanup", By: "schedule", Detail: "pruned nothing"},
		}},
		logs: map[string]string{},
	}
}

// newTestPage serves f's page behind the admin handler (alice's and bob's
// tokens), as the daemon does.
func newTestPage(t *testing.T, f *fakeDaemon, opts Options) (*Page, http.Handler) {
	t.Helper()
	tokens := filepath.Join(t.TempDir(), "tokens")
	lines := gitserver.HashToken("alice", aliceToken) + "\n" + gitserver.HashToken("bob", bobToken) + "\n"
	if err := os.WriteFile(tokens, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	opts.Log = slog.New(slog.DiscardHandler)
	p := New(f, opts)
	p.now = func() time.Time { return epoch }
	h := &admin.Handler{Metrics: admin.NewMetrics(nil), Page: p, Log: opts.Log}
	h.Configure(config.HTTPAdmin{Listen: "127.0.0.1:0", TokensFile: tokens})
	return p, h
}

// do sends a request to h as the holder of token ("" for none).
func do(h http.Handler, r *http.Request, token string) *httptest.ResponseRecorder {
	if token != "" {
		r.SetBasicAuth("anyone", token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

var hiddenCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// confirm opens the confirmation page of a rollback of hello to to as the
// holder of token, and returns the form's token and the cookie set.
func confirm(t *testing.T, h http.Handler, to, token string) (string, *http.Cookie) {
	t.Helper()
	rec := do(h, httptest.NewRequest("GET", "/apps/hello/rollback?to="+to, nil), token)
	if rec.Code != http.StatusOK {
		t.Fatalf("confirmation page: HTTP %d\n%s", rec.Code, rec.Body)
	}
	m := hiddenCSRF.FindStringSubmatch(rec.Body.String())
	if m == nil {
		t.Fatalf("no token in the form:\n%s", rec.Body)
	}
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 || cookies[0].Name != csrfCookie || cookies[0].Value != m[1] ||
		cookies[0].SameSite != http.SameSiteStrictMode || !cookies[0].HttpOnly {
		t.Fatalf("cookie: %+v, want %s=%s, SameSite=Strict, HttpOnly", cookies, csrfCookie, m[1])
	}
	return m[1], cookies[0]
}

// post is a rollback form posted to hello from the page itself, unless
// edit changes it.
func post(form string, cookie *http.Cookie, edit func(r *http.Request)) *http.Request {
	r := httptest.NewRequest("POST", "/apps/hello/rollback", strings.NewReader(form))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Origin", "http://example.com") // httptest's host
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	if cookie != nil {
		r.AddCookie(cookie)
	}
	if edit != nil {
		edit(r)
	}
	return r
}
