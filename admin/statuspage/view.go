package statuspage

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/internal/escape"
	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

// appView is one app as the page shows it.
type appView struct {
	Name, Branch string
	Listen       []string
	Live         *releaseView    // nil: nothing live
	LiveSince    *releases.Event // the deploy or rollback that made Live live, if in the ledger
	Target       string          // the previous good release, the Roll back button's; "" if none
	Workers      []workerView    // every worker not draining
	Draining     []workerView
	Timeline     []entryView // newest first
	Older        int         // ledger events not shown
	Problem      string      // what could not be read
}

// releaseView is a release's metadata, its text safe to show.
type releaseView struct {
	ID, Revision, Short, Subject, Pusher, BuiltOn string
	Status                                        releases.Status
	Created                                       time.Time
	BuildSeconds                                  float64
	HasBuildLog                                   bool
}

type workerView struct {
	PID      int
	Release  string
	State    supervisor.WorkerState
	Uptime   string
	Restarts int
	KillIn   string // a draining worker's time left before SIGKILL
	Trouble  bool   // crashing
}

// entryView is one ledger event on the timeline.
type entryView struct {
	releases.Event
	Title      string // "deploy v3", "failed rollback to v1"
	Failed     bool
	Bar        *barView
	BuildLog   string // the release whose build log to link, "" if none
	RollbackTo string // the release a Roll back button puts live, "" if none
	Forward    bool   // RollbackTo is newer than the live release
}

// barView draws an operation's phases as a stacked bar. X and W are in
// units of 1/1000 of the longest operation on the timeline, so bars
// compare across operations.
type barView struct {
	Total    float64
	Segments []segment
}

type segment struct {
	Phase   string
	Seconds float64
	X, W    float64
}

// phaseOrder is the order of a deploy's steps (releases.Event.Phases).
var phaseOrder = []string{"receive", "checkout", "build", "ship", "preflight", "green"}

// apps reads every app from the source.
func (p *Page) apps() []appView {
	var out []appView
	for _, st := range p.src.Status() {
		out = append(out, p.app(st))
	}
	return out
}

func (p *Page) app(st deployer.Status) appView {
	v := appView{Name: st.App, Branch: st.Branch, Listen: st.Listen}
	now := p.now()
	for _, w := range st.Workers {
		wv := workerView{PID: w.PID, Release: w.Release, State: w.State, Restarts: w.Restarts,
			Trouble: w.State == supervisor.CrashLoop || w.State == supervisor.Backoff}
		if !w.Started.IsZero() {
			wv.Uptime = ago(now, w.Started)
		}
		if w.State == supervisor.Draining {
			if !w.KillAt.IsZero() {
				wv.KillIn = until(now, w.KillAt)
			}
			v.Draining = append(v.Draining, wv)
			continue
		}
		v.Workers = append(v.Workers, wv)
	}
	list, live, err := p.src.Releases(st.App)
	if err != nil {
		v.Problem = "releases: " + escape.Controls(err.Error())
	}
	byID := map[string]*releases.Release{}
	for _, r := range list {
		byID[r.ID] = r
	}
	if r := byID[live]; r != nil {
		v.Live = newReleaseView(r)
	} else if live != "" {
		v.Live = &releaseView{ID: live}
	}
	if t := releases.PreviousGood(list, live); t != nil {
		v.Target = t.ID
	}
	events, err := p.ledger.get(st.App)
	if err != nil {
		v.Problem = strings.TrimPrefix(v.Problem+"; ", "; ") + "ledger: " + escape.Controls(err.Error())
	}
	v.LiveSince = liveSince(events, live)
	v.Timeline, v.Older = p.timeline(events, byID, live)
	return v
}

func newReleaseView(r *releases.Release) *releaseView {
	subject, _, _ := strings.Cut(r.Message, "\n")
	return &releaseView{
		ID: r.ID, Revision: r.Revision, Short: short(r.Revision), Subject: escape.Controls(subject),
		Pusher: escape.Controls(r.Pusher), BuiltOn: escape.Controls(r.BuiltOn), Status: r.Status,
		Created: r.Created, BuildSeconds: r.BuildSeconds,
		HasBuildLog: r.Status != releases.Pruned,
	}
}

// liveSince is the newest deploy or rollback that made live live.
func liveSince(events []releases.Event, live string) *releases.Event {
	for i := len(events) - 1; i >= 0; i-- {
		if e := events[i]; (e.Event == "deploy" || e.Event == "rollback") && e.Release == live {
			return &e
		}
	}
	return nil
}

// timeline is the newest events of the ledger, newest first, and how many
// older ones are left out.
func (p *Page) timeline(events []releases.Event, byID map[string]*releases.Release, live string) ([]entryView, int) {
	n := min(len(events), p.opts.Timeline)
	var out []entryView
	longest := 0.0
	offered := map[string]bool{}
	for i := len(events) - 1; i >= len(events)-n; i-- {
		e := events[i]
		e.Detail, e.By = escape.Controls(e.Detail), escape.Controls(e.By)
		v := entryView{Event: e, Failed: e.Event == "failure", Title: title(e)}
		if r := byID[e.Release]; r != nil {
			op := e.Event
			if v.Failed {
				op = e.Of
			}
			if op == "deploy" && r.Status != releases.Pruned {
				v.BuildLog = r.ID
			}
			// One button per release, on its newest deploy or rollback.
			if (e.Event == "deploy" || e.Event == "rollback") && !offered[r.ID] && rollbackable(r, live) {
				v.RollbackTo = r.ID
				offered[r.ID] = true
				if n, ok := releases.ParseID(live); ok && r.Number > n {
					v.Forward = true
				}
			}
		}
		if v.Bar = bar(e); v.Bar != nil {
			longest = max(longest, v.Bar.Total)
		}
		out = append(out, v)
	}
	for _, v := range out {
		if v.Bar == nil {
			continue
		}
		for i := range v.Bar.Segments {
			v.Bar.Segments[i].X *= 1000 / longest
			v.Bar.Segments[i].W *= 1000 / longest
		}
	}
	return out, len(events) - n
}

// rollbackable says whether r may go live again in place of live: it was
// live and is still on disk.
func rollbackable(r *releases.Release, live string) bool {
	return r.ID != live && (r.Status == releases.Retired || r.Status == releases.RolledBack)
}

func title(e releases.Event) string {
	switch e.Event {
	case "deploy":
		return "deploy " + e.Release
	case "rollback":
		return "rollback to " + e.Release
	case "reload":
		return "reload of " + e.Release
	case "failure":
		switch e.Of {
		case "rollback":
			return "failed rollback to " + e.Release
		case "reload":
			return "failed reload of " + e.Release
		case "":
			return "failure " + e.Release
		}
		return "failed " + e.Of + " " + e.Release
	}
	return strings.TrimSpace(e.Event + " " + e.Release)
}

// bar is e's phases as a stacked bar in seconds (scaled by timeline), or
// nil for an untimed event. Time not in any phase (the swap, waiting for
// the lock) is an "other" segment at the end.
func bar(e releases.Event) *barView {
	if len(e.Phases) == 0 && e.Seconds <= 0 {
		return nil
	}
	names := slices.Clone(phaseOrder)
	for _, k := range slices.Sorted(maps.Keys(e.Phases)) {
		if !slices.Contains(names, k) {
			names = append(names, k)
		}
	}
	b := &barView{}
	x := 0.0
	for _, name := range names {
		s := e.Phases[name]
		if s <= 0 {
			continue
		}
		b.Segments = append(b.Segments, segment{Phase: name, Seconds: s, X: x, W: s})
		x += s
	}
	if rest := e.Seconds - x; rest > 0.01*e.Seconds && rest > 0.001 {
		b.Segments = append(b.Segments, segment{Phase: "other", Seconds: rest, X: x, W: rest})
		x += rest
	}
	if x <= 0 {
		return nil
	}
	b.Total = max(e.Seconds, x)
	return b
}

func short(rev string) string {
	if len(rev) > 7 {
		return rev[:7]
	}
	return rev
}

// secs is a duration in seconds as people read it: 0.04s, 12.3s, 2m05s.
func secs(s float64) string {
	switch {
	case s < 10:
		return fmt.Sprintf("%.2fs", s)
	case s < 60:
		return fmt.Sprintf("%.1fs", s)
	}
	d := time.Duration(s * float64(time.Second)).Round(time.Second)
	if d < time.Hour {
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

// ago is how long before now t was, coarser as it grows: 12s, 4m, 3h, 2d.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// until is how long from now to t, in seconds; "now" once passed.
func until(now, t time.Time) string {
	d := t.Sub(now)
	if d <= 0 {
		return "now"
	}
	return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
}
