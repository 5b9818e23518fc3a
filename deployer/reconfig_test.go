package deployer

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/supervisor"
)

// withSockets gives the test app real listening sockets on addrs.
func (ta *testApp) withSockets(addrs ...string) []*supervisor.Socket {
	ta.t.Helper()
	sockets, err := supervisor.ListenSockets(ta.name, addrs, 0)
	if err != nil {
		ta.t.Fatal(err)
	}
	reply := make(chan pool, 1)
	ta.swapc <- swapRequest{cfg: ta.settings(), sockets: sockets, reply: reply}
	<-reply
	return sockets
}

// TestReconfigureSwapsPoolConfigAndSocketsTogether: the fresh pool runs
// with the new settings on the kept and the new sockets; only then is the
// new config published and the socket no longer listed closed.
func TestReconfigureSwapsPoolConfigAndSocketsTogether(t *testing.T) {
	cfg := testConfig()
	ta := newTestApp(t, cfg)
	old := ta.withSockets("127.0.0.1:0", "127.0.0.2:0")
	blue := ta.withLive()
	next := *cfg
	next.Workers = 5
	next.Listen = []string{"127.0.0.2:0", "localhost:0"}
	if err := ta.reconfigure(context.Background(), &next); err != nil {
		t.Fatal(err)
	}
	green := ta.starter.last()
	if green.spec.Workers != 5 || len(green.spec.Sockets) != 2 {
		t.Fatalf("green %+v", green.spec)
	}
	waitUntil(t, "blue to drain in the background", blue.isStopped)
	if green.spec.Sockets[0] != old[1] || slices.Contains(green.spec.Sockets, old[0]) {
		t.Fatal("the kept address did not keep its socket")
	}
	if green.spec.Sockets[0].Name != "hello-0" || green.spec.Sockets[1].Name != "hello-1" {
		t.Fatalf("socket names %s %s", green.spec.Sockets[0].Name, green.spec.Sockets[1].Name)
	}
	if ta.settings() != &next {
		t.Fatal("the new config was not published")
	}
	if _, err := old[0].FD(); err == nil {
		t.Fatal("the socket of the dropped address is still open")
	}
	if _, err := old[1].FD(); err != nil {
		t.Fatalf("the kept socket: %v", err)
	}
}

// TestReconfigureThatFailsChangesNothing: the old pool, config and socket
// names stay; the sockets it opened are closed.
func TestReconfigureThatFailsChangesNothing(t *testing.T) {
	cfg := testConfig()
	ta := newTestApp(t, cfg)
	old := ta.withSockets("127.0.0.1:0")
	blue := ta.withLive()
	ta.starter.set(func(s *fakeStarter) { s.startErr = errInjected })
	next := *cfg
	next.Listen = []string{"127.0.0.2:0", "127.0.0.1:0"}
	if err := ta.reconfigure(context.Background(), &next); !errors.Is(err, errInjected) {
		t.Fatalf("reconfigure: %v", err)
	}
	if blue.isStopped() || ta.settings() != cfg || old[0].Name != "hello-0" {
		t.Fatal("a failed reconfigure changed the app")
	}
	opened := ta.starter.last().spec.Sockets[0]
	if _, err := opened.FD(); err == nil {
		t.Fatal("the socket the failed reconfigure opened is still open")
	}
}

// TestReconfigureAddsChangesAndRemovesApps: a removed app is closed and
// recorded as stopped, a changed one reloads, an added one opens and
// starts; the daemon's config is the new one.
func TestReconfigureAddsChangesAndRemovesApps(t *testing.T) {
	d, add := newTestDaemon(t)
	gone := add(appConfig("gone"))
	goneBlue := gone.withLive()
	kept := add(appConfig("kept"))
	keptBlue := kept.withLive()
	next := *d.cfg
	next.Apps = map[string]*config.App{}
	changed := appConfig("kept")
	changed.Workers = 7
	next.Apps["kept"] = changed
	added := config.DefaultApp("added")
	added.Listen = []string{"127.0.0.1:0"}
	next.Apps["added"] = added
	if err := d.Reconfigure(&next); err != nil {
		t.Fatal(err)
	}
	if !goneBlue.isStopped() || gone.store.LastEvent("stop") == nil {
		t.Fatal("the removed app still runs")
	}
	if _, err := d.App("gone"); !errors.Is(err, ErrUnknownApp) {
		t.Fatalf("removed app: %v", err)
	}
	if !keptBlue.isStopped() || kept.starter.last().spec.Workers != 7 {
		t.Fatal("the changed app was not reloaded")
	}
	if a, err := d.App("added"); err != nil || a.Branch() != "main" {
		t.Fatalf("added app: %v", err)
	}
	if d.cfg != &next {
		t.Fatal("the daemon's config is not the new one")
	}
	if err := d.Reload(context.Background(), "kept", "bob", io.Discard); err != nil {
		t.Fatal(err)
	}
}
