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

// probe is the app's health check for rel.
func (a *App) probe(rel *releases.Release) supervisor.Probe {
	h := a.cfg().Health
	return supervisor.Probe{
		HTTPPath: h.HTTP, TCP: h.TCP, Command: h.Command,
		Dir: a.store.Dir(rel.ID), Env: a.buildEnv(rel, ""), Timeout: h.Timeout,
	}
}

// liveAddr is where the live release can be probed: the first listen
// address, with a wildcard host made loopback.
func (a *App) liveAddr() string {
	host, port, _ := net.SplitHostPort(a.cfg().Listen[0])
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// watch keeps probing the live address for health.watch after rel went
// live; watchFailures failures in a row roll back to previous. A newer
// cut-over ends the watch.
func (a *App) watch(pr *progress, rel *releases.Release, previous string) {
	probe := a.probe(rel)
	if a.cfg().Health.Watch <= 0 || previous == "" || !probe.Active() {
		return
	}
	ctx, cancel := context.WithTimeout(a.work, a.cfg().Health.Watch)
	a.mu.Lock()
	if a.stopWatch != nil {
		a.stopWatch()
	}
	a.stopWatch = cancel
	a.mu.Unlock()
	pr.Step("Watching %s for %s: if it turns unhealthy, %s goes live again", rel.ID, a.cfg().Health.Watch, previous)
	addr := a.liveAddr() // the address rel went live on, whatever a reload does later
	go func() {
		defer cancel()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		fails := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			err := probe.Check(ctx, addr)
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
			a.autoRollback(ctx, rel.ID, previous, err)
			return
		}
	}()
}

// endWatch stops a running health.watch: something else is going live.
func (a *App) endWatch() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopWatch != nil {
		a.stopWatch()
		a.stopWatch = nil
	}
}

func (a *App) autoRollback(ctx context.Context, bad, previous string, why error) {
	reason := fmt.Sprintf("health.watch: %s failed %d probes in a row: %v", bad, watchFailures, why)
	a.log.Warn("live release unhealthy: rolling back", "release", bad, "to", previous, "err", why)
	unlock, err := a.acquire(ctx, newProgress(nil), "automatic rollback of "+bad)
	if err != nil {
		return // the watch ended while waiting: another operation took over
	}
	defer unlock()
	if cur, _ := a.store.Current(); cur != bad {
		return
	}
	if err := a.rollbackLocked(newProgress(nil), previous, "health.watch", reason); err != nil {
		a.log.Error("automatic rollback failed", "release", bad, "to", previous, "err", err)
	}
}
