package deployer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

// Workers outlive the daemon. Each app keeps apps/APP/workers.json: every
// pool it runs, with the pid and start time of each worker process, saved
// whenever a process changes. The next daemon, after a crash or an upgrade,
// adopts the live pool from it instead of starting a new one, and retires
// what else was running (a green pool of an interrupted deploy, blue pools
// still draining).

// Pool roles in workers.json.
const (
	roleLive     = "live"
	roleGreen    = "green"    // started for a cut-over that had not happened yet
	roleDraining = "draining" // retired, draining
)

// poolRecord is one pool in workers.json.
type poolRecord struct {
	Release string                    `json:"release"`
	Role    string                    `json:"role"`
	Workers []supervisor.WorkerRecord `json:"workers"`
}

func (a *App) workersFile() string { return filepath.Join(a.dir, "workers.json") }

// saveWorkers writes the pools the app runs, as its loop last published
// them, to workers.json. The loop calls it at every change of the pools,
// and the workers whenever a process changes. A crash of the daemon leaves
// the page cache intact, so no fsync: if the machine itself goes down, no
// worker survives to be adopted anyway.
func (a *App) saveWorkers() {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	v := a.view.Load()
	var recs []poolRecord
	add := func(p pool, role string) {
		if p != nil {
			recs = append(recs, poolRecord{Release: p.Release(), Role: role, Workers: p.Records()})
		}
	}
	add(v.live, roleLive)
	add(v.green, roleGreen)
	for _, p := range v.draining {
		add(p, roleDraining)
	}
	b, err := json.MarshalIndent(recs, "", "  ")
	if err == nil {
		tmp := a.workersFile() + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, a.workersFile())
		}
	}
	if err != nil {
		a.log.Error("save the worker list: a daemon restarted now could not adopt the workers", "err", err)
	}
}

// loadWorkers reads workers.json: the live pool first, then green, then
// the rest.
func (a *App) loadWorkers() []poolRecord {
	b, err := os.ReadFile(a.workersFile())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			a.log.Error("read the worker list", "err", err)
		}
		return nil
	}
	var recs []poolRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		a.log.Error("read the worker list", "err", err)
		return nil
	}
	rank := map[string]int{roleLive: 0, roleGreen: 1}
	slices.SortStableFunc(recs, func(x, y poolRecord) int {
		rx, okx := rank[x.Role]
		ry, oky := rank[y.Role]
		if !okx {
			rx = 2
		}
		if !oky {
			ry = 2
		}
		return rx - ry
	})
	return recs
}

// adopt takes over what a previous daemon left running: the first recorded
// pool of the current release is returned, to become the live pool once the
// recovery of the disk is done; every other recorded pool is retired
// (drained as usual). A green pool of a release that never went live is
// drained before adopt returns, so the recovery that follows finds no
// process in its tree.
func (j *job) adopt(current string) pool {
	var adopted pool
	inUse := map[string]bool{}
	defer func() { j.sweepGroups(inUse) }()
	for _, rec := range j.loadWorkers() {
		rel, err := j.store.Get(rec.Release)
		if err != nil {
			continue
		}
		// Only the pool that stays live gets new workers for those gone: the
		// others are retired, and must not start their release again.
		keep := adopted == nil && rec.Release == current && rec.Role != roleDraining
		p, err := j.starter.AdoptPool(j.poolSpec(rel), rec.Workers, j.output, keep)
		if err != nil {
			continue
		}
		for _, w := range p.Records() {
			inUse[w.Cgroup] = true
		}
		if keep {
			adopted = p
			// Listed at once (as green until resume makes it live), so that
			// every save of workers.json from now on has it: a daemon killed
			// again during this start still finds the live workers.
			j.setGreen(p)
			j.log.Info("adopted the running workers", "release", rel.ID, "workers", len(p.Records()))
			continue
		}
		j.log.Info("retiring workers a previous daemon left", "release", rel.ID, "role", rec.Role)
		if rel.Status == releases.Building {
			p.Stop()
			continue
		}
		j.retireInBackground(p)
	}
	return adopted
}

// output is the kept output pipe of a worker a previous daemon started.
func (a *App) output(pid int) *os.File {
	if a.outputs == nil {
		return nil
	}
	return a.outputs(a.Name(), pid)
}

// Detach lets go of every app without stopping a worker, for a new daemon
// process to adopt them (an upgrade). Running operations must have ended:
// the caller stopped taking requests and waited for them (Quiesce).
func (d *Daemon) Detach() {
	d.mu.Lock()
	d.closed = true
	c := d.cron
	d.mu.Unlock()
	if c != nil {
		<-c.Stop().Done()
	}
	d.reconfMu.Lock()
	defer d.reconfMu.Unlock()
	for _, a := range d.appList() {
		a.detach()
	}
	d.cancel()
}

// Quiesce stops new operations (they fail with ErrClosed) and waits until
// the running ones end, or ctx does.
func (d *Daemon) Quiesce(ctx context.Context) error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	select {
	case <-d.opsEnded():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("operations still running: %w", ErrClosed)
	}
}

// Unquiesce takes operations again after a Quiesce whose handover was
// abandoned before Detach.
func (d *Daemon) Unquiesce() {
	d.mu.Lock()
	d.closed = false
	d.mu.Unlock()
}

// sweepGroups kills and removes every cgroup of the app that a previous
// daemon left and nothing adopted: a build or hook it was running, a
// preflight instance, a worker it did not record, and whatever they forked,
// wherever they moved to (their cwd or process group does not matter).
func (j *job) sweepGroups(inUse map[string]bool) {
	tree := j.opts.Cgroups
	if tree == nil {
		return
	}
	for _, name := range tree.List(j.cfg.Name) {
		if inUse[name] {
			continue
		}
		g, err := tree.Get(name)
		if err != nil {
			continue
		}
		populated := g.Populated()
		if err := g.Remove(); err != nil {
			j.log.Error("remove a cgroup a previous daemon left", "cgroup", name, "err", err)
		} else if populated {
			j.log.Warn("killed what a previous daemon left running", "cgroup", name)
		}
	}
}

// RecordedWorkers are the worker processes app's workers.json in dataDir
// names, every pool's, the live pool's first: where the app's sockets can
// be taken back from when no other copy of them survived.
func RecordedWorkers(dataDir, app string) []supervisor.WorkerRecord {
	b, err := os.ReadFile(filepath.Join(dataDir, "apps", app, "workers.json"))
	if err != nil {
		return nil
	}
	var recs []poolRecord
	if json.Unmarshal(b, &recs) != nil {
		return nil
	}
	slices.SortStableFunc(recs, func(x, y poolRecord) int {
		if (x.Role == roleLive) == (y.Role == roleLive) {
			return 0
		}
		if x.Role == roleLive {
			return -1
		}
		return 1
	})
	var out []supervisor.WorkerRecord
	for _, r := range recs {
		out = append(out, r.Workers...)
	}
	return out
}
