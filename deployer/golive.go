package deployer

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

// cutover says what going live changes besides the pool and current.
type cutover struct {
	ref      string          // the deploy branch; "" leaves it alone (reload)
	from, to string          // compare-and-swap of ref
	previous string          // the release live before, "" if none
	retireAs releases.Status // what previous becomes: retired, or rolled-back
	// event, if set, is the ledger line of the change, written as soon as
	// rel is live: before blue drains, so a crash during the drain does not
	// lose it. Its Seconds are counted from since.
	event *releases.Event
	since time.Time
}

// liveTimes are the durations of the steps of goLive, and the step it failed at.
type liveTimes struct {
	preflight, green, swap time.Duration
	step                   string
}

// addPhases adds to p, for the ledger, the durations of the steps that
// ran: both once rel went live; on a failure, those up to the step that
// failed, which counts until it failed.
func (lt liveTimes) addPhases(p map[string]float64) {
	p["preflight"] = lt.preflight.Seconds()
	if lt.step != "preflight" {
		p["green"] = lt.green.Seconds()
	}
}

// goLive puts rel live through the health gate: preflight on a private
// socket, green on the shared sockets, then cut-over (branch, current,
// metadata, ledger, pools swapped, blue told to stop and let go of the
// sockets). It returns then: blue drains in the background. On any failure
// before the cut-over green is stopped and nothing else has changed.
func (j *job) goLive(rel *releases.Release, c cutover) (liveTimes, error) {
	var lt liveTimes
	t := time.Now()
	spec := j.poolSpec(rel)
	if err := j.giveTree(rel); err != nil {
		lt.step, lt.preflight = "preflight", time.Since(t)
		return lt, err
	}
	var healthyAfter time.Duration // how long the preflight instance took to answer healthy
	if j.cfg.Health.Preflight {
		lt.step = "preflight"
		j.pr.Step("Preflight: one %s worker on a private socket, probing %s", rel.ID, j.probeName())
		var err error
		if healthyAfter, err = j.starter.Preflight(j.ctx, spec, j.probe(rel)); err != nil {
			lt.preflight = time.Since(t)
			return lt, err
		}
		j.pr.Step("Preflight passed (%s)", secs(time.Since(t)))
	}
	lt.preflight = time.Since(t)

	t = time.Now()
	lt.step = "green"
	j.pr.Step("Starting %d green workers of %s (each must stay up %s)", rel.Workers, rel.ID, j.cfg.Health.MinUptime)
	green := j.starter.NewPool(spec)
	j.setGreen(green) // status shows its workers as starting
	if err := green.WaitUp(j.ctx, j.cfg.Health.Timeout); err != nil {
		lt.green = time.Since(t)
		j.setGreen(nil)
		return lt, err
	}
	waited, err := j.waitLikePreflight(t, healthyAfter)
	if err != nil {
		lt.green = time.Since(t)
		green.Stop()
		j.setGreen(nil)
		return lt, err
	}
	lt.green = time.Since(t)
	if waited > 0 {
		j.pr.Step("Green is up (%s: each worker up %s, then as long as preflight took to answer)", secs(lt.green), j.cfg.Health.MinUptime)
	} else {
		j.pr.Step("Green is up (%s)", secs(lt.green))
	}

	if n := j.cfg.Health.Warmup; n > 0 && j.cfg.Health.HTTP != "" {
		w0 := time.Now()
		res := green.Warm(j.ctx, supervisor.Warmup{Addr: j.liveAddr(), Path: j.cfg.Health.HTTP,
			Conns: warmConns, Requests: n * rel.Workers, ConnLife: warmConnLife(n), Limit: j.cfg.Health.Timeout, Share: warmShare})
		lt.green = time.Since(t)
		j.pr.Step("Warm-up: %d GET %s on the live socket, %d answered 2xx (%s)", res.Sent, j.cfg.Health.HTTP, res.OK, secs(time.Since(w0)))
		if res.CPU > 0 {
			j.pr.Info("paced: green held to %.2f cores, %s", res.CPU, spareNote(res.Spare, res.CPU))
		}
		if res.Workers != nil {
			j.pr.Info("answered by green's workers: %s, over %d connections%s", joinInts(res.Workers), res.Conns, straysNote(res.Strays))
			for i, n := range res.Workers {
				if n == 0 && j.ctx.Err() == nil {
					// The kernel gave its connections to other processes
					// every time: it goes live, but cold.
					j.pr.Info("worker %d took none of the warm-up's connections: it goes live without a warm-up", i)
				}
			}
		}
		err := survivedWarmup(green.Status(), j.cfg.Name)
		if err == nil && res.OK*10 < res.Sent*9 {
			// Only green's answers are counted: the failures are green's.
			err = fmt.Errorf("only %d of %d warm-up requests answered 2xx (first failure: %v)", res.OK, res.Sent, res.First)
		}
		if j.ctx.Err() != nil {
			err = fmt.Errorf("green: %w", context.Cause(j.ctx))
		}
		if err != nil {
			green.Stop()
			j.setGreen(nil)
			return lt, err
		}
	}

	t = time.Now()
	lt.step = "cut-over"
	if err := j.cutOver(rel, c); err != nil {
		green.Stop()
		j.setGreen(nil)
		return lt, err
	}
	// The new state is on disk before the drain, which may take drain_timeout.
	blue := j.swap(green)
	j.recordLive(rel, c, lt)
	// The cut-over ends when blue stops taking connections: from then on
	// every new one goes to green. A worker that keeps its listener open
	// while it drains is not waited for longer than acceptWait.
	if blue != nil {
		if err := blue.StopAccepting(min(acceptWait, j.cfg.DrainTimeout)); err != nil {
			j.pr.Info("%v: it may take new connections until it exits", err)
			j.log.Warn("the replaced pool still holds the app's socket", "err", err)
		}
	}
	j.drainInBackground(blue)
	lt.swap = time.Since(t)
	lt.step = ""
	if c.previous == rel.ID {
		j.pr.Step("Cut-over: fresh workers of %s are live (%s)", rel.ID, secs(lt.swap))
	} else {
		j.pr.Step("Cut-over: %s is live, %s %s (%s)", rel.ID, orNone(c.previous), c.retireAs, secs(lt.swap))
	}
	if blue != nil {
		what := blue.Release()
		if c.previous == rel.ID {
			what = "the old workers of " + what
		}
		j.pr.Info("%s draining in the background (up to %s)", what, j.cfg.DrainTimeout)
	}
	return lt, nil
}

// survivedWarmup says which green worker, if any, exited since it was up:
// a release whose workers fall over under its first requests does not go
// live.
func survivedWarmup(workers []supervisor.WorkerStatus, app string) error {
	for _, w := range workers {
		if w.State != supervisor.Running || w.Restarts > 0 {
			return fmt.Errorf("worker %d exited during the warm-up (its output: deployer logs %s)", w.Index, app)
		}
	}
	return nil
}

// joinInts is ns as "1, 2, 3".
func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// straysNote says how many warm-up connections the live workers took (and
// the warm-up closed), if any.
func straysNote(strays int) string {
	if strays == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d connections the live workers took were closed unused)", strays)
}

// warmConns is how many connections per green worker the warm-up opens.
const warmConns = 4

// warmConnLife is how many requests one warm-up connection carries
// before the warm-up closes it and dials another, for a warm-up of n
// requests per worker: about a quarter of a connection's share, so that
// each worker sees its connections close early in the warm-up and often
// (the JIT then compiles for closed connections too, and does not
// recompile at the cut-over), from 25 to 250 requests. Below 400 per
// worker that is more than a quarter, and at 100 or fewer a connection
// carries its whole share: none closes before the warm-up ends.
func warmConnLife(n int) int {
	return min(max(n/warmConns/4, minConnLife), maxConnLife)
}

const minConnLife, maxConnLife = 25, 250

// warmShare is the share of the CPU left idle while green started that
// green may use in its warm-up: the rest stays for the live workers'
// bursts.
const warmShare = 0.5

// spareNote says what a paced warm-up's budget of cpu cores came from:
// spare cores were idle while green started.
func spareNote(spare, cpu float64) string {
	if cpu > spare*warmShare {
		return fmt.Sprintf("the least a warm-up gets (%.2f cores were idle while green started)", spare)
	}
	return fmt.Sprintf("half of the %.2f cores idle while green started", spare)
}

// acceptWait bounds how long a cut-over waits for the pool it replaces to
// close its listeners after the stop signal.
const acceptWait = 2 * time.Second

// waitLikePreflight waits, once green's workers are up, until green has
// been starting for as long as the preflight instance took to answer
// healthy: a worker alive for min_uptime is not yet an app that answers
// (a framework still loading), and green's workers cannot be probed one by
// one on the shared socket. With health.notify, READY=1 already says the
// app is ready, and nothing more is waited for. It returns how long it
// waited.
func (j *job) waitLikePreflight(greenStarted time.Time, healthyAfter time.Duration) (time.Duration, error) {
	if j.cfg.Health.Notify {
		return 0, nil
	}
	left := healthyAfter - time.Since(greenStarted)
	if left <= 0 {
		return 0, nil
	}
	timer := time.NewTimer(left)
	defer timer.Stop()
	select {
	case <-timer.C:
		return left, nil
	case <-j.ctx.Done():
		return 0, fmt.Errorf("green: %w", context.Cause(j.ctx))
	}
}

// cutOver moves the deploy branch (compare-and-swap), then current, then
// records rel live and the previous release retired. If a step fails, the
// steps before it are undone: the branch and current name what they named.
// It is not cancelled with the operation: once started it completes or
// undoes itself.
func (j *job) cutOver(rel *releases.Release, c cutover) error {
	bg := context.WithoutCancel(j.ctx)
	if c.ref != "" {
		if err := j.repo.UpdateRef(bg, c.ref, c.to, c.from, "deployer: "+rel.ID+" live"); err != nil {
			return err
		}
	}
	undoRef := func() {
		if c.ref == "" {
			return
		}
		if err := j.repo.UpdateRef(bg, c.ref, c.from, c.to, "deployer: undo "+rel.ID); err != nil {
			j.log.Error("undo the branch move; the next start moves it back", "release", rel.ID, "err", err)
		}
	}
	if err := j.store.SetCurrent(rel.ID); err != nil {
		undoRef()
		return err
	}
	status := rel.Status
	rel.Status = releases.Live
	if err := j.save(rel); err != nil {
		rel.Status = status
		j.restoreCurrent(c.previous)
		undoRef()
		return err
	}
	if c.previous != "" && c.previous != rel.ID {
		if prev, err := j.store.Get(c.previous); err == nil && prev.Status == releases.Live {
			prev.Status = c.retireAs
			if err := j.save(prev); err != nil {
				j.pr.Info("%s could not be marked %s (the next start will): %v", prev.ID, c.retireAs, err)
			}
		}
	}
	return nil
}

// restoreCurrent points current back at previous, or removes it if nothing
// was live.
func (j *job) restoreCurrent(previous string) {
	var err error
	if previous == "" {
		err = j.store.ClearCurrent()
	} else {
		err = j.store.SetCurrent(previous)
	}
	if err != nil {
		j.log.Error("undo the current switch", "current", orNone(previous), "err", err)
	}
}

func (j *job) probeName() string {
	h := j.cfg.Health
	var s string
	switch {
	case h.HTTP != "":
		s = "GET " + h.HTTP
	case h.TCP:
		s = "a TCP connection"
	case h.Command != "":
		s = "command " + h.Command
	default:
		s = fmt.Sprintf("uptime %s", h.MinUptime)
	}
	if h.Notify {
		s = "READY=1, then " + s
	}
	return s
}

// recordLive writes the ledger line of a change that just went live, with
// the durations of its steps.
func (j *job) recordLive(rel *releases.Release, c cutover, lt liveTimes) {
	if c.event == nil {
		return
	}
	e := *c.event
	e.Seconds = time.Since(c.since).Seconds()
	e.Phases = maps.Clone(e.Phases)
	if e.Phases == nil {
		e.Phases = map[string]float64{}
	}
	lt.addPhases(e.Phases)
	if err := j.record(e); err != nil {
		j.pr.Info("%s is live, but the ledger could not record it: %v", rel.ID, err)
	}
}
