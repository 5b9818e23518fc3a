package deployer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"time"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/releases"
	"github.com/deployer/deployer/supervisor"
)

// Reconfigure applies a new, validated configuration without a restart
// (SIGHUP): a removed app drains and stops, then a changed app gets a fresh
// pool with its new settings through the usual health gate, keeping every
// socket whose address did not change, then an added app starts; in that
// order, so an address an app gave up can be taken by another in the same
// reload. Apps whose settings did not change are not touched. If a changed app's new pool does
// not come up, that app keeps its old settings and pool, and the error says
// so. Changes under git: need a restart; they are reported, not applied.
func (d *Daemon) Reconfigure(cfg *config.Config) error {
	d.reconfMu.Lock()
	defer d.reconfMu.Unlock()
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return ErrClosed
	}
	d.appsMu.RLock()
	old := d.cfg
	d.appsMu.RUnlock()
	var errs []error
	if !reflect.DeepEqual(old.Git, cfg.Git) || old.DataDir != cfg.DataDir || old.LogFormat != cfg.LogFormat {
		d.log.Warn("config reload: changes to data_dir, log_format and git.* take effect at the next restart")
	}

	for _, name := range old.AppNames() {
		if _, kept := cfg.Apps[name]; kept {
			continue
		}
		a, _ := d.App(name)
		d.appsMu.Lock()
		delete(d.apps, name)
		d.appsMu.Unlock()
		d.log.Info("config reload: app removed, draining it", "app", name)
		a.retireApp()
	}
	for _, name := range cfg.AppNames() {
		prev, exists := old.Apps[name]
		if !exists || reflect.DeepEqual(prev, cfg.Apps[name]) {
			continue
		}
		a, err := d.App(name)
		if err != nil {
			continue
		}
		d.log.Info("config reload: app changed, reloading its pool", "app", name)
		if err := a.reconfigure(d.ctx, cfg.Apps[name]); err != nil {
			errs = append(errs, fmt.Errorf("app %s: new settings not applied: %w", name, err))
		}
	}

	for _, name := range cfg.AppNames() {
		if _, exists := old.Apps[name]; exists {
			continue
		}
		a, err := openApp(d.ctx, cfg.DataDir, cfg.Apps[name], old.Git, d.notify, d.log, d.opts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d.appsMu.Lock()
		d.apps[name] = a
		d.appsMu.Unlock()
		d.log.Info("config reload: app added", "app", name)
		if err := a.resume(d.ctx); err != nil {
			errs = append(errs, fmt.Errorf("app %s: %w", name, err))
		}
	}
	applied := cfg
	if len(errs) > 0 {
		// Keep the settings of apps that could not change, so that the
		// next reload compares against what really runs.
		applied = d.running(cfg)
	}
	d.appsMu.Lock()
	d.cfg = applied
	d.appsMu.Unlock()
	d.schedule()
	return errors.Join(errs...)
}

// running is cfg with each app's settings as the app really runs them.
func (d *Daemon) running(cfg *config.Config) *config.Config {
	out := *cfg
	out.Apps = map[string]*config.App{}
	d.appsMu.RLock()
	defer d.appsMu.RUnlock()
	for name, a := range d.apps {
		out.Apps[name] = a.settings()
	}
	return &out
}

// reconfigure switches the app to cfg in its turn: sockets of new addresses
// are opened, a fresh pool of the live release starts with cfg, and only
// once it is up are the old pool and the sockets no longer listed let go.
// On failure nothing changes.
func (a *App) reconfigure(ctx context.Context, cfg *config.App) error {
	return a.do(ctx, &op{what: "config reload", cancelable: true, run: func(j *job) error { return j.reconfigure(cfg) }})
}

func (j *job) reconfigure(cfg *config.App) error {
	j.endWatch() // it probes the old address with the old settings
	oldSockets := j.sockets
	var sockets, opened []*supervisor.Socket
	for i, addr := range cfg.Listen {
		if k := slices.IndexFunc(oldSockets, func(s *supervisor.Socket) bool { return s.Addr == addr }); k >= 0 {
			sockets = append(sockets, oldSockets[k])
			continue
		}
		s, err := j.opts.socket(cfg.Name, i, addr)
		if err != nil {
			supervisor.CloseSockets(opened)
			return err
		}
		opened = append(opened, s)
		sockets = append(sockets, s)
	}
	acct, err := cfg.Account()
	if err == nil {
		err = prepareAccount(filepath.Dir(filepath.Dir(j.dir)), j.dir, acct, j.log)
	}
	if err != nil {
		supervisor.CloseSockets(opened)
		return fmt.Errorf("apps.%s.user: %w", cfg.Name, err)
	}
	renamed := map[*supervisor.Socket]string{}
	for i, s := range sockets {
		renamed[s] = s.Name
		s.Name = fmt.Sprintf("%s-%d", cfg.Name, i) // LISTEN_FDNAMES follows the new order
	}
	next := *j
	next.cfg, next.sockets = cfg, sockets
	next.acct = acct
	if _, err := j.store.Current(); errors.Is(err, releases.ErrNoCurrent) {
		next.swap(nil) // nothing live yet: the next deploy uses the new settings
	} else if err := next.reload("config reload"); err != nil {
		for s, name := range renamed {
			s.Name = name
		}
		for _, s := range oldSockets { // the new pool set the new value on the sockets it shared
			_ = s.SetDeferAccept(j.cfg.DeferAcceptFor())
		}
		supervisor.CloseSockets(opened)
		return err
	}
	for _, s := range oldSockets {
		if !slices.Contains(sockets, s) {
			s.Close()
		}
	}
	return nil
}

// retireApp stops an app that left the configuration: a running operation
// is cancelled, the pools drain, the sockets close.
func (a *App) retireApp() {
	a.close("config reload")
	a.record(releases.Event{Event: "stop", By: "config reload", Time: time.Now().UTC()})
}
