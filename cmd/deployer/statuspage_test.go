package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/deployer/deployer/deployer"
)

// chromium is the path of a Chromium or Chrome binary; the test is skipped
// without one (.ci/run installs Debian's chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium binary found (apt-get install chromium): the status page's browser test needs one")
	return ""
}

// browser is a headless Chromium tab.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // Chromium refuses to start as root with its sandbox
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// within runs actions in the tab, failing the test if they do not finish
// within d: every wait for the page has a deadline.
func within(t *testing.T, ctx context.Context, d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		html, _ := chromedp.Run(context.WithoutCancel(ctx), chromedp.OuterHTML(chromedp.CSS("body")))
		t.Fatalf("%s: %v\npage:\n%s", what, err, html)
	}
}

// clickAndLoad clicks sel and waits for the page it loads.
func clickAndLoad(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel)))); err != nil {
		t.Fatalf("click %s: %v", sel, err)
	}
}

func TestStatusPageInABrowserFollowsPushesLiveAndRollsBack(t *testing.T) {
	tab := browser(t)
	d, addr := newAdminDaemon(t)
	r := newAppRepo(t)
	r.mustPush(d)
	r.commit("second", map[string]string{"message.txt": "second"})
	r.mustPush(d)

	// The credentials are in the first URL only, as a user types them or
	// answers the browser's prompt: the browser keeps them for the origin
	// and sends them with what follows, the script, the event stream, the
	// links and the rollback form.
	within(t, tab, 30*time.Second, "the page shows v2 live and the timeline",
		chromedp.Navigate("http://alice:"+testToken+"@"+addr+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#app-hello .live[data-live="v2"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline-hello li[data-event="deploy"][data-release="v2"] svg.bar`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline-hello li[data-event="deploy"][data-release="v1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="live"]`)), // the event stream is open
	)
	// A reload would lose this.
	if _, err := chromedp.Run(tab, chromedp.Evaluate[bool](`window.stayed = true`)); err != nil {
		t.Fatal(err)
	}

	r.commit("third", map[string]string{"message.txt": "third"})
	r.mustPush(d)
	within(t, tab, 20*time.Second, "v3 appears live and on the timeline without a reload",
		chromedp.WaitVisible(chromedp.CSS(`#app-hello .live[data-live="v3"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline-hello li[data-event="deploy"][data-release="v3"]`)),
	)
	r.commit("broken build", map[string]string{"broken.go": "package main\nthis does not compile\n"})
	if out, err := r.push(d.url(testToken)); err == nil {
		t.Fatalf("a push that does not build was accepted:\n%s", out)
	}
	within(t, tab, 20*time.Second, "the failed deploy appears, marked, with its reason",
		chromedp.WaitVisible(chromedp.CSS(`#timeline-hello li.failed[data-event="failure"][data-release="v4"] .detail`)),
	)
	if stayed, err := chromedp.Run(tab, chromedp.Evaluate[bool](`window.stayed === true`)); err != nil || !stayed {
		t.Fatalf("the page was reloaded (%v)", err)
	}
	if reason := textOf(t, tab, `#timeline-hello li.failed .detail`); !strings.Contains(reason, "build failed") {
		t.Errorf("the failure's reason: %q", reason)
	}

	// Roll back: the button asks first, then the rollback goes through.
	clickAndLoad(t, tab, `#app-hello a[data-rollback="v2"]`)
	within(t, tab, 10*time.Second, "the confirmation page", chromedp.WaitVisible(chromedp.ID("confirm")))
	if d.status().Live != "v3" {
		t.Fatal("the confirmation page rolled back")
	}
	clickAndLoad(t, tab, `#confirm`)
	within(t, tab, 30*time.Second, "the outcome shows v2 live",
		chromedp.WaitVisible(chromedp.CSS(`#outcome[data-outcome="ok"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#app-hello .live[data-live="v2"]`)),
	)
	clickAndLoad(t, tab, `p.back a`)
	within(t, tab, 20*time.Second, "the status page shows v2 live and the rollback",
		chromedp.WaitVisible(chromedp.CSS(`#app-hello .live[data-live="v2"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline-hello li[data-event="rollback"][data-release="v2"]`)),
	)
	if by := textOf(t, tab, `#timeline-hello li[data-event="rollback"] .when`); !strings.Contains(by, "status page (alice)") {
		t.Errorf("the rollback is not recorded as the status page's, by alice: %q", by)
	}

	// The failed release's build log, read by the daemon as `deployer
	// logs --build` reads it, shows why.
	clickAndLoad(t, tab, `#timeline-hello li.failed a[href="/apps/hello/releases/v4/build"]`)
	within(t, tab, 10*time.Second, "the build log", chromedp.WaitVisible(chromedp.CSS(`pre.log`)))
	if log := textOf(t, tab, `pre.log`); !strings.Contains(log, "broken.go") {
		t.Errorf("the build log of v4 does not say what failed:\n%s", log)
	}
	within(t, tab, 20*time.Second, "back to the status page",
		chromedp.Navigate("http://"+addr+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="live"]`)),
	)

	var st []deployer.Status
	if err := json.Unmarshal([]byte(d.mustCLI("status", "--json")), &st); err != nil || len(st) != 1 || st[0].Live != "v2" {
		t.Fatalf("deployer status: %+v %v", st, err)
	}
	d.serves("v2")

	screenshot(t, tab, os.Getenv("DEPLOYER_SCREENSHOT"))
	// On a phone: one column, nothing wider than the screen.
	within(t, tab, 10*time.Second, "a phone's viewport",
		chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)),
		chromedp.WaitVisible(chromedp.CSS(`#app-hello .live[data-live="v2"]`)),
	)
	if fits, err := chromedp.Run(tab, chromedp.Evaluate[bool](`document.documentElement.scrollWidth <= window.innerWidth`)); err != nil || !fits {
		w, _ := chromedp.Run(tab, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
		t.Errorf("the page is %dpx wide on a 390px phone (%v)", w, err)
	}
	if path := os.Getenv("DEPLOYER_SCREENSHOT"); path != "" {
		screenshot(t, tab, strings.TrimSuffix(path, filepath.Ext(path))+"-phone"+filepath.Ext(path))
	}
}

// textOf is the text of the first element sel selects, "" if none. It is
// read in one step: the live updates may replace the element at any time.
func textOf(t *testing.T, tab context.Context, sel string) string {
	t.Helper()
	q, _ := json.Marshal(sel)
	s, err := chromedp.Run(tab, chromedp.Evaluate[string](`(document.querySelector(`+string(q)+`) || {}).textContent || ""`))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// screenshot writes the whole page as a PNG to path, if path is set.
func screenshot(t *testing.T, tab context.Context, path string) {
	t.Helper()
	if path == "" {
		return
	}
	png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}
