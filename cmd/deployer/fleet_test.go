package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer/deployer/fleet"
)

const fleetToken = "fleet-secret-0123456789"

// fleetDaemon starts a daemon whose config has a fleet section: the fleet
// token, and peers (name -> git address) if any.
func fleetDaemon(t *testing.T, token string, peers map[string]string) *daemon {
	t.Helper()
	d := writeDaemonConfig(t, "")
	if err := os.WriteFile(filepath.Join(d.dir, "fleet-token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := "fleet:\n  token_file: fleet-token\n"
	if len(peers) > 0 {
		f += "  peers:\n"
		for _, name := range []string{"web2", "web3"} {
			if addr, ok := peers[name]; ok {
				f += fmt.Sprintf("    - {name: %s, url: \"http://%s\"}\n", name, addr)
			}
		}
	}
	cfg, _ := os.ReadFile(d.config)
	if err := os.WriteFile(d.config, append(cfg, f...), 0o644); err != nil {
		t.Fatal(err)
	}
	d.start()
	t.Cleanup(d.stop)
	return d
}

// addPeers restarts d with peers (name -> git address) added to its fleet
// section, the last of its config.
func (d *daemon) addPeers(peers map[string]string) {
	d.t.Helper()
	d.stop()
	f := "  peers:\n"
	for _, name := range []string{"web2", "web3"} {
		if addr, ok := peers[name]; ok {
			f += fmt.Sprintf("    - {name: %s, url: \"http://%s\"}\n", name, addr)
		}
	}
	cfg, _ := os.ReadFile(d.config)
	if err := os.WriteFile(d.config, append(cfg, f...), 0o644); err != nil {
		d.t.Fatal(err)
	}
	d.start()
}

type fleetView struct {
	Hosts []fleet.Result      `json:"hosts"`
	Split map[string][]string `json:"split"`
}

func (d *daemon) fleetStatus() fleetView {
	d.t.Helper()
	var v fleetView
	if err := json.Unmarshal([]byte(d.mustCLI("status", "--fleet", "--json")), &v); err != nil {
		d.t.Fatal(err)
	}
	return v
}

// TestStatusFleetShowsWhichReleaseIsLiveWhere: three daemons on one
// machine; `deployer status --fleet` on the first shows each host's live
// release and revision, names the hosts that differ, and reports a host
// that is down or refuses the token instead of leaving it out. The fleet's
// endpoint takes only the fleet's token, never a pusher's.
func TestStatusFleetShowsWhichReleaseIsLiveWhere(t *testing.T) {
	d2 := fleetDaemon(t, fleetToken, nil)
	d3 := fleetDaemon(t, fleetToken, nil)
	d1 := fleetDaemon(t, fleetToken, map[string]string{"web2": d2.gitAddr, "web3": d3.gitAddr})
	r := newAppRepo(t)
	for _, d := range []*daemon{d1, d2, d3} {
		r.mustPush(d)
	}
	v := d1.fleetStatus()
	if len(v.Hosts) != 3 || !v.Hosts[0].Self || v.Hosts[1].Host != "web2" || v.Hosts[2].Host != "web3" {
		t.Fatalf("hosts: %+v", v.Hosts)
	}
	for _, h := range v.Hosts {
		if h.State == nil || len(h.State.Apps) != 1 || h.State.Apps[0].Live != "v1" || h.State.Apps[0].Revision != d1.branch() {
			t.Fatalf("%s: %+v (%s)", h.Host, h.State, h.Error)
		}
	}
	if len(v.Split) != 0 {
		t.Fatalf("split on an agreeing fleet: %v", v.Split)
	}

	// web2 moves on alone: the fleet is split, and says where.
	r.commit("second", map[string]string{"message.txt": "two"})
	r.mustPush(d2)
	out := d1.mustCLI("status", "--fleet")
	if !strings.Contains(out, "split: hello differs on web2") {
		t.Fatalf("no split in:\n%s", out)
	}
	var rels []struct {
		Host     string          `json:"host"`
		Live     string          `json:"live"`
		Releases []fleet.Release `json:"releases"`
	}
	if err := json.Unmarshal([]byte(d1.mustCLI("releases", "hello", "--fleet", "--json")), &rels); err != nil {
		t.Fatal(err)
	}
	if len(rels) != 3 || rels[1].Host != "web2" || rels[1].Live != "v2" || len(rels[1].Releases) != 2 || rels[0].Live != "v1" {
		t.Fatalf("releases --fleet: %+v", rels)
	}
	// web3 goes down: reported, not left out.
	d3.stop()
	v = d1.fleetStatus()
	if v.Hosts[2].State != nil || !strings.Contains(v.Hosts[2].Error, "connection refused") {
		t.Fatalf("web3 down: %+v", v.Hosts[2])
	}

	// Only the fleet's token opens the endpoint.
	for _, c := range []struct {
		name string
		set  func(*http.Request)
	}{
		{"no token", func(*http.Request) {}},
		{"a pusher's token", func(r *http.Request) { r.SetBasicAuth("alice", testToken) }},
		{"a wrong bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+fleetToken+"x") }},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+d2.gitAddr+fleet.StatusPath, nil)
		c.set(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: HTTP %d", c.name, resp.StatusCode)
		}
	}
	// And the fleet's token pushes nothing.
	if out, err := r.push("http://fleet:" + fleetToken + "@" + d2.gitAddr + "/hello.git"); err == nil {
		t.Fatalf("a push with the fleet token went through:\n%s", out)
	}

	// A host whose token differs is reported as refusing it.
	d4 := fleetDaemon(t, "another-fleet-secret-000", nil)
	d5 := fleetDaemon(t, fleetToken, map[string]string{"web2": d4.gitAddr})
	v = d5.fleetStatus()
	if !strings.Contains(v.Hosts[1].Error, "refused this host's fleet token") {
		t.Fatalf("wrong token: %+v", v.Hosts[1])
	}
}

// TestRollbackFleetIsAllOrNothing: `deployer rollback APP --fleet` rolls
// every host back, this one first; when a later host cannot, the hosts
// already switched go back to what they ran, and the command fails naming
// that host.
func TestRollbackFleetIsAllOrNothing(t *testing.T) {
	d2 := fleetDaemon(t, fleetToken, nil)
	d3 := fleetDaemon(t, fleetToken, nil)
	d1 := fleetDaemon(t, fleetToken, nil)
	// Each host deploys on its own first (a push to a host with peers
	// would roll out to them): web3 gets only the second release.
	r := newAppRepo(t)
	for _, d := range []*daemon{d1, d2} {
		r.mustPush(d)
	}
	r.commit("second", map[string]string{"message.txt": "two"})
	for _, d := range []*daemon{d1, d2, d3} {
		r.mustPush(d)
	}
	d1.addPeers(map[string]string{"web2": d2.gitAddr, "web3": d3.gitAddr})
	live := func() []string {
		var out []string
		for _, h := range d1.fleetStatus().Hosts {
			out = append(out, h.State.Apps[0].Live)
		}
		return out
	}
	if got := live(); strings.Join(got, " ") != "v2 v2 v1" {
		t.Fatalf("before: %v", got)
	}
	// web3 has nothing to roll back to: web2 and this host are put back.
	out, err := d1.cli("rollback", "hello", "--fleet")
	if err == nil || !strings.Contains(out, "web3:") || !strings.Contains(out, "putting back the hosts already switched") {
		t.Fatalf("rollback --fleet with web3 unable: %v\n%s", err, out)
	}
	if got := live(); strings.Join(got, " ") != "v2 v2 v1" {
		t.Fatalf("after the refused rollback: %v\n%s", got, out)
	}
	if body, _ := d2.get(); !strings.Contains(body, "two") {
		t.Fatalf("web2 serves %q", body)
	}

	// With every host able to, all go back, each line prefixed by its host.
	d3.stop()
	d3b := fleetDaemon(t, fleetToken, nil) // a fresh web3, given both releases below
	d1.stop()
	cfg, _ := os.ReadFile(d1.config)
	os.WriteFile(d1.config, []byte(strings.Replace(string(cfg), d3.gitAddr, d3b.gitAddr, 1)), 0o644)
	d1.start()
	r2 := newAppRepo(t)
	r2.mustPush(d3b)
	r2.commit("second", map[string]string{"message.txt": "two"})
	r2.mustPush(d3b)
	out = d1.mustCLI("rollback", "hello", "--fleet")
	for _, want := range []string{"web2: -----> ", "web3: -----> ", "Fleet rollback of hello done on 3 host(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if got := live(); strings.Join(got, " ") != "v1 v1 v1" {
		t.Fatalf("after the rollback: %v\n%s", got, out)
	}
}
