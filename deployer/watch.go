package deployer

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

// watchFailures is how many probes in a row must fail before health.watch
// rolls back: one lost probe on a busy machine is not a broken release.
const watchFailures = 3

// watchSpec is a health.watch of release bad-if-it-fails, which rolls back
// to previous.
type watchSpec struct {
	release, previous string
	probe             supervisor.Probe
	addr              string
	period            time.Duration
}

// probe is the app's health check for rel.
func (j *job) probe(rel *releases.Release) supervisor.Probe {
	h := j.cfg.Health
	return supervisor.Probe{
		HTTPPath: h.HTTP, TCP: h.TCP, Command: h.Command,
		Dir: j.store.Dir(rel.ID), Env: j.buildEnv(rel, ""), Timeout: h.Timeout, Account: j.acct,
	}
}

// liveAddr is where the live release can be probed: the first listen
// address, with a wildcard host made loopback.
func (j *job) liveAddr() string {
	host, port, _ := net.SplitHostPort(j.cfg.Listen[0])
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// startWatch asks the loop to keep probing the live address for
// health.watch after rel went live; watchFailures failures in a row roll
// back to previous. A newer cut-over ends the watch.
func (j *job) startWatch(rel *releases.Release, previous string) {
	probe := j.probe(rel)
	if j.cfg.Health.Watch <= 0 || previous == "" || !probe.Active() {
		return
	}
	j.pr.Step("Watching %s for %s: if it turns unhealthy, %s goes live again", rel.ID, j.cfg.Health.Watch, previous)
	j.watchc <- &watchSpec{
		release: rel.ID, previous: previous, probe: probe,
		addr:   j.liveAddr(), // the address rel went live on, whatever a reload does later
		period: j.cfg.Health.Watch,
	}
}

// watch probes w.addr every watchEvery (a second) until ctx ends (the loop ended the watch
// or its period passed), and rolls back after watchFailures failures in a row.
func (a *App) watch(ctx context.Context, w *watchSpec) {
	tick := time.NewTicker(a.watchEvery)
	defer tick.Stop()
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		err := w.probe.Check(ctx, w.addr)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			fails = 0
			continue
		}
		if fails++; fails < watchFailures {
			continue
		}
		a.autoRollback(ctx, w.release, w.previous, err)
		return
	}
}

// autoRollback asks for the rollback of bad in the app's turn. It waits on
// ctx, the watch's: if another operation goes live first, the watch ends and
// so does the wait.
func (a *App) autoRollback(ctx context.Context, bad, previous string, why error) {
	reason := fmt.Sprintf("health.watch: %s failed %d probes in a row: %v", bad, watchFailures, why)
	a.log.Warn("live release unhealthy: rolling back", "release", bad, "to", previous, "err", why)
	ran := false
	err := a.do(ctx, &op{what: "automatic rollback of " + bad, cancelable: true, run: func(j *job) error {
		ran = true
		if cur, _ := j.store.Current(); cur != bad {
			return nil
		}
		return j.rollback(previous, "health.watch", reason)
	}})
	switch {
	case err != nil && ran:
		a.log.Error("automatic rollback failed", "release", bad, "to", previous, "err", err)
	case err != nil: // another operation took over, or the app closed
		a.log.Info("automatic rollback not run", "release", bad, "err", err)
	}
}
