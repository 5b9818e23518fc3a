package statuspage

import (
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/deployer/deployer/releases"
)

func TestPageShowsEachAppsLiveReleaseWorkersAndTimeline(t *testing.T) {
	f := newFake()
	_, h := newTestPage(t, f, Options{})
	rec := do(h, httptest.NewRequest("GET", "/", nil), aliceToken)
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP %d\n%s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`<meta name="viewport" content="width=device-width, initial-scale=1">`,
		`id="app-hello"`, `id="timeline-hello"`, `id="app-idle"`, `id="timeline-idle"`,
		// The live release: id, revision, subject (its first line), when.
		`data-live="v3"`, `<code title="` + f.releases["hello"][1].Revision + `">0000000</code>`,
		`third: &lt;script&gt;alert(1)&lt;/script&gt;</span>`,
		`live since <time class="abs" datetime="2026-11-28T09:53:00Z">2026-11-28 09:53:00 UTC</time> (7m ago), deploy by alice`,
		// The previous good release is the Roll back button's.
		`<a class="button danger" href="/apps/hello/rollback" data-rollback="v2">Roll back to v2…</a>`,
		// Workers, a crashing one marked, the draining one with its time left.
		`<tr class="state-running"><td>4101</td><td>v3</td><td>running</td><td>1m</td><td>0</td></tr>`,
		`<tr class="state-crashloop trouble"><td>4102</td><td>v3</td><td>crashloop</td><td>5s</td><td>7</td></tr>`,
		`<tr class="state-draining"><td>3901</td><td>v2</td><td>draining</td><td>8s</td><td>0</td></tr>`,
		// The failure, red, with the operation and its reason, escaped.
		`<li class="ev ev-failure failed" data-event="failure" data-release="v4">`,
		`<b class="title">failed deploy v4</b>`,
		`build failed: exit status 1 \x1b[31m&lt;img src=x onerror=alert(2)&gt;`,
		// Each release's build log, and a button to go back to v2 (retired)
		// and to v1 (rolled back from, which --to accepts).
		`href="/apps/hello/releases/v3/build"`, `href="/apps/hello/releases/v4/build"`,
		`href="/apps/hello/rollback?to=v2" data-rollback="v2"`, `href="/apps/hello/rollback?to=v1" data-rollback="v1"`,
		`Nothing live yet`, `The ledger is empty.`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	for _, bad := range []string{"<script>alert", "<img src=x", "\x1b", `rollback?to=v3`, `rollback?to=v4`} {
		if strings.Contains(body, bad) {
			t.Errorf("the page has %q", bad)
		}
	}
	// Newest first.
	order := regexp.MustCompile(`data-event="(\w+)" data-release="(v?\d*)"`).FindAllStringSubmatch(body, -1)
	var got []string
	for _, m := range order {
		got = append(got, m[1]+" "+m[2])
	}
	if want := "cleanup ,failure v4,deploy v3,deploy v2,deploy v1"; strings.Join(got, ",") != want {
		t.Errorf("timeline: %q, want %q", strings.Join(got, ","), want)
	}
	for h, want := range map[string]string{
		"Content-Security-Policy": "default-src 'none'; script-src 'self'",
		"X-Frame-Options":         "DENY",
		"Cache-Control":           "no-store",
	} {
		if !strings.HasPrefix(rec.Header().Get(h), want) {
			t.Errorf("%s: %q, want %q…", h, rec.Header().Get(h), want)
		}
	}
}

// TestPhasesAreDrawnToScaleWithTheRestAsOther: a bar's segments follow the
// steps' order, each as long as its share of the longest operation on the
// timeline; time in no phase is "other".
func TestPhasesAreDrawnToScaleWithTheRestAsOther(t *testing.T) {
	f := newFake()
	p, _ := newTestPage(t, f, Options{})
	entries, older := p.timeline(f.history["hello"], map[string]*releases.Release{}, "v3")
	if older != 0 || len(entries) != 5 {
		t.Fatalf("%d entries, %d older", len(entries), older)
	}
	v2 := entries[3] // 4s, the longest: build 3s of it
	if v2.Release != "v2" || v2.Bar == nil {
		t.Fatalf("entry 3: %+v", v2)
	}
	var names []string
	for _, s := range v2.Bar.Segments {
		names = append(names, s.Phase)
	}
	if strings.Join(names, ",") != "receive,checkout,build,preflight,green,other" {
		t.Errorf("segments: %v", names)
	}
	if b := v2.Bar.Segments[2]; b.X != 50 || b.W != 750 {
		t.Errorf("build of the longest: x %v w %v, want 50 750 (of 1000)", b.X, b.W)
	}
	if last := v2.Bar.Segments[5]; last.X+last.W != 1000 || last.Seconds < 0.09 || last.Seconds > 0.11 {
		t.Errorf("other: %+v, want 0.1s ending at 1000", last)
	}
	v3 := entries[2] // 2s: half as long
	if end := v3.Bar.Segments[len(v3.Bar.Segments)-1]; end.X+end.W != 500 {
		t.Errorf("v3 ends at %v, want 500", end.X+end.W)
	}
	if failed := entries[1]; !failed.Failed || len(failed.Bar.Segments) != 3 || math.Abs(failed.Bar.Total-0.6) > 1e-9 {
		t.Errorf("a failure has the phases that ran: %+v", failed.Bar)
	}
	if entries[0].Bar != nil {
		t.Errorf("an untimed cleanup has a bar: %+v", entries[0].Bar)
	}
}

func TestTimelineShowsTheNewestEventsAndCountsTheRest(t *testing.T) {
	f := newFake()
	_, h := newTestPage(t, f, Options{Timeline: 2})
	body := do(h, httptest.NewRequest("GET", "/", nil), aliceToken).Body.String()
	if n := strings.Count(body, `data-event=`); n != 2 {
		t.Errorf("%d events shown, want 2", n)
	}
	if !strings.Contains(body, "3 older events are in the ledger") {
		t.Error("the events left out are not counted")
	}
}

// otherFirst is tok with another first character (a token that starts
// with "x" must not stay the same).
func otherFirst(tok string) string {
	if strings.HasPrefix(tok, "x") {
		return "y" + tok[1:]
	}
	return "x" + tok[1:]
}

// TestRollbackNeedsTheFormTokenItsCookieAndTheSameOrigin: a POST is
// refused with 403, and nothing done, unless it carries the user's own
// token in the form and the cookie and comes from the page's origin; then
// the rollback runs once, recorded as by the status page and the user.
func TestRollbackNeedsTheFormTokenItsCookieAndTheSameOrigin(t *testing.T) {
	f := newFake()
	_, h := newTestPage(t, f, Options{})
	tok, cookie := confirm(t, h, "v2", aliceToken)
	bobTok, bobCookie := confirm(t, h, "v2", bobToken)
	if bobTok == tok {
		t.Fatal("two users have the same token")
	}
	if len(f.calls()) != 0 {
		t.Fatalf("the confirmation page rolled back: %v", f.calls())
	}
	form := func(csrf string) string {
		return url.Values{"csrf": {csrf}, "from": {"v3"}, "to": {"v2"}}.Encode()
	}
	for _, c := range []struct {
		name string
		req  *http.Request
	}{
		{"no token", post(url.Values{"from": {"v3"}, "to": {"v2"}}.Encode(), cookie, nil)},
		{"a wrong token", post(form(otherFirst(tok)), cookie, nil)},
		{"another user's token", post(form(bobTok), bobCookie, nil)},
		{"no cookie", post(form(tok), nil, nil)},
		{"a cookie of another user", post(form(tok), bobCookie, nil)},
		{"another origin", post(form(tok), cookie, func(r *http.Request) {
			r.Header.Del("Sec-Fetch-Site")
			r.Header.Set("Origin", "https://evil.example")
		})},
		{"a cross-site fetch", post(form(tok), cookie, func(r *http.Request) {
			r.Header.Set("Sec-Fetch-Site", "cross-site")
		})},
	} {
		rec := do(h, c.req, aliceToken)
		if rec.Code != http.StatusForbidden {
			t.Errorf("%s: HTTP %d, want 403\n%s", c.name, rec.Code, rec.Body)
		}
		if calls := f.calls(); len(calls) != 0 {
			t.Fatalf("%s: rolled back: %v", c.name, calls)
		}
	}
	if rec := do(h, post(form(tok), cookie, nil), ""); rec.Code != http.StatusUnauthorized {
		t.Errorf("without basic auth: HTTP %d, want 401", rec.Code)
	}

	rec := do(h, post(form(tok), cookie, nil), aliceToken)
	if rec.Code != http.StatusOK {
		t.Fatalf("the right token: HTTP %d\n%s", rec.Code, rec.Body)
	}
	if calls := f.calls(); len(calls) != 1 || calls[0] != "hello v2 status page (alice)" {
		t.Fatalf("rollbacks: %q, want one, to v2 by the status page (alice)", calls)
	}
	for _, want := range []string{`data-outcome="ok"`, `hello: v2 is live`, `Rolling back hello from v3 to v2`, `data-live="v2"`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("the outcome lacks %s:\n%s", want, rec.Body)
		}
	}

	// The same form again (a reload of the outcome): v3 is no longer live,
	// so nothing is done.
	rec = do(h, post(form(tok), cookie, nil), aliceToken)
	if rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), "is now v2, not v3") {
		t.Errorf("a stale form: HTTP %d\n%s", rec.Code, rec.Body)
	}
	if calls := f.calls(); len(calls) != 1 {
		t.Fatalf("a stale form rolled back: %v", calls)
	}
}

func TestARefusedRollbackShowsWhyAndTheOutput(t *testing.T) {
	f := newFake()
	f.rollErr = errorString("preflight: v2 is not healthy: connection refused")
	_, h := newTestPage(t, f, Options{})
	tok, cookie := confirm(t, h, "", aliceToken) // the previous good release
	rec := do(h, post(url.Values{"csrf": {tok}, "from": {"v3"}, "to": {"v2"}}.Encode(), cookie, nil), aliceToken)
	if rec.Code != http.StatusConflict {
		t.Fatalf("HTTP %d", rec.Code)
	}
	for _, want := range []string{`data-outcome="failed"`, "Rollback of hello to v2 failed", "v2 is not healthy", "refused at preflight", `data-live="v3"`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("the outcome lacks %s:\n%s", want, rec.Body)
		}
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

// TestGetNeverRollsBack: the confirmation page only asks, whatever it is
// asked; the rollback answers POST only.
func TestGetNeverRollsBack(t *testing.T) {
	f := newFake()
	_, h := newTestPage(t, f, Options{})
	for path, code := range map[string]int{
		"/apps/hello/rollback":       http.StatusOK, // to v2, the previous good one
		"/apps/hello/rollback?to=v1": http.StatusOK,
		"/apps/hello/rollback?to=v3": http.StatusConflict, // live
		"/apps/hello/rollback?to=v4": http.StatusConflict, // failed
		"/apps/hello/rollback?to=v9": http.StatusNotFound,
		"/apps/idle/rollback":        http.StatusConflict, // nothing live
		"/apps/nope/rollback":        http.StatusNotFound,
	} {
		rec := do(h, httptest.NewRequest("GET", path, nil), aliceToken)
		if rec.Code != code {
			t.Errorf("GET %s: HTTP %d, want %d\n%s", path, rec.Code, code, rec.Body)
		}
	}
	if rec := do(h, httptest.NewRequest("GET", "/apps/hello/rollback", nil), aliceToken); !strings.Contains(rec.Body.String(), "Roll back hello to v2?") {
		t.Errorf("the default target is not the previous good release:\n%s", rec.Body)
	}
	if rec := do(h, httptest.NewRequest("PUT", "/apps/hello/rollback", nil), aliceToken); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("PUT: HTTP %d", rec.Code)
	}
	if calls := f.calls(); len(calls) != 0 {
		t.Fatalf("rolled back on a GET: %v", calls)
	}
}

func TestBuildLogIsEscapedAndCutToItsEnd(t *testing.T) {
	f := newFake()
	f.logs["hello/v3"] = "step 1\n<script>alert('owned')</script>\n\x1b[31mred\x1b[0m \x07bell\n50%\r100%\n"
	f.logs["hello/v2"] = strings.Repeat("early line\n", 1000) + "the last line\n"
	_, h := newTestPage(t, f, Options{BuildLogTail: 1024})

	rec := do(h, httptest.NewRequest("GET", "/apps/hello/releases/v3/build", nil), aliceToken)
	body := rec.Body.String()
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP %d\n%s", rec.Code, body)
	}
	if strings.Contains(body, "<script>alert") || strings.Contains(body, "\x1b") || strings.Contains(body, "\x07") {
		t.Fatalf("the log is not escaped:\n%s", body)
	}
	for _, want := range []string{"&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;", "\nred \\abell\n100%\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("the log lacks %q:\n%s", want, body)
		}
	}

	body = do(h, httptest.NewRequest("GET", "/apps/hello/releases/v2/build", nil), aliceToken).Body.String()
	if !strings.Contains(body, "the last line") || strings.Count(body, "early line") > 1024/len("early line\n") {
		t.Errorf("not the log's end, or more than 1KiB of it:\n%s", body)
	}
	if !strings.Contains(body, "bytes are left out") || !strings.Contains(body, "<pre class=\"log\">early line\n") {
		t.Errorf("the cut is not said, or is mid-line:\n%s", body)
	}

	for path, code := range map[string]int{
		"/apps/hello/releases/v4/build":         http.StatusInternalServerError, // no log, though it should have one
		"/apps/hello/releases/v9/build":         http.StatusNotFound,
		"/apps/hello/releases/v03/build":        http.StatusNotFound,
		"/apps/hello/releases/..%2Fx/build":     http.StatusNotFound,
		"/apps/hello/releases/v1%2F..%2F/build": http.StatusNotFound,
		"/apps/nope/releases/v1/build":          http.StatusNotFound,
	} {
		if rec := do(h, httptest.NewRequest("GET", path, nil), aliceToken); rec.Code != code {
			t.Errorf("GET %s: HTTP %d, want %d", path, rec.Code, code)
		}
	}
}

func TestCleanLogDropsColoursAndEscapesOtherControls(t *testing.T) {
	for in, want := range map[string]string{
		"plain\ttext":                    "plain\ttext",
		"\x1b[1;32mok\x1b[0m":            "ok",
		"\x1b]0;title\x07after":          "after",
		"crlf\r\nnext":                   "crlf\nnext",
		"10%\r20%\r30%":                  "30%",
		"nul\x00 esc\x1b alone \u009b c": `nul\x00 esc\x1b alone \u009b c`,
	} {
		if got := cleanLog(in); got != want {
			t.Errorf("cleanLog(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestANewerReleaseIsOfferedAsARollForward: after a rollback, the release
// rolled back from may go live again (`rollback --to`); its button says
// which way it goes.
func TestANewerReleaseIsOfferedAsARollForward(t *testing.T) {
	f := newFake()
	f.live["hello"] = "v2"
	f.releases["hello"][1].Status = releases.RolledBack // v3
	f.releases["hello"][2].Status = releases.Live       // v2
	f.history["hello"] = append(f.history["hello"], releases.Event{Time: epoch, Event: "rollback", Release: "v2", From: "v3", By: "bob"})
	_, h := newTestPage(t, f, Options{})
	body := do(h, httptest.NewRequest("GET", "/", nil), aliceToken).Body.String()
	for _, want := range []string{
		`data-rollback="v3">Roll forward to v3…</a>`,
		`data-rollback="v1">Roll back to v1…</a>`,
		`live since <time class="abs" datetime="2026-11-28T10:00:00Z">2026-11-28 10:00:00 UTC</time> (0s ago), rollback by bob`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if strings.Contains(body, `data-rollback="v2"`) {
		t.Error("the live release is offered")
	}
	if rec := do(h, httptest.NewRequest("GET", "/apps/hello/rollback?to=v3", nil), aliceToken); !strings.Contains(rec.Body.String(), "<dt>forward to</dt>") {
		t.Errorf("the confirmation does not say it goes forward:\n%s", rec.Body)
	}
}
