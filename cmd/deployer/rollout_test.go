package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// rolloutStart is the start script the rollout tests commit: a host
// refuses to start a release that holds fail-on-<its name>, so a test can
// make one host fail health while the others pass, with the same tree.
const rolloutStart = `#!/bin/sh
if [ -e "fail-on-$HOST_NAME" ]; then echo "this release refuses to start on $HOST_NAME"; exit 1; fi
exec ./bin/hello
`

// fleetHost is fleetDaemon for the rollout tests: the host is named name
// (fleet.name, and HOST_NAME in the app's env); its build leaves a random
// build-id.txt, so a tree built twice would differ; extraFleet is appended
// to its fleet section.
func fleetHost(t *testing.T, name string, peers map[string]string, extraFleet string) *daemon {
	t.Helper()
	d := writeDaemonConfig(t, "")
	if err := os.WriteFile(filepath.Join(d.dir, "fleet-token"), []byte(fleetToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := fmt.Sprintf("fleet:\n  name: %s\n  token_file: fleet-token\n%s", name, extraFleet)
	if len(peers) > 0 {
		f += "  peers:\n"
		for _, peer := range []string{"web1", "web2", "web3"} {
			if addr, ok := peers[peer]; ok {
				f += fmt.Sprintf("    - {name: %s, url: \"http://%s\"}\n", peer, addr)
			}
		}
	}
	b, _ := os.ReadFile(d.config)
	cfg := strings.NewReplacer(
		`build: "go build -o bin/hello ."`, `build: "go build -o bin/hello . && od -An -N16 -tx1 /dev/urandom > build-id.txt"`,
		`start: "./bin/hello"`, `start: "./start.sh"`,
		`env: {GREETING: hi}`, `env: {GREETING: hi, HOST_NAME: `+name+`}`,
		defaultHealth, failingHealth,
	).Replace(string(b))
	if err := os.WriteFile(d.config, []byte(cfg+f), 0o644); err != nil {
		t.Fatal(err)
	}
	d.start()
	t.Cleanup(d.stop)
	return d
}

// threeHosts starts web2 and web3, then web1 with both as its peers.
func threeHosts(t *testing.T, extraFleet string) (d1, d2, d3 *daemon) {
	d2 = fleetHost(t, "web2", nil, "")
	d3 = fleetHost(t, "web3", nil, "")
	d1 = fleetHost(t, "web1", map[string]string{"web2": d2.gitAddr, "web3": d3.gitAddr}, extraFleet)
	return
}

func newRolloutRepo(t *testing.T) *appRepo {
	r := newAppRepo(t)
	if err := os.WriteFile(filepath.Join(r.dir, "start.sh"), []byte(rolloutStart), 0o755); err != nil {
		t.Fatal(err)
	}
	r.commit("start.sh", nil)
	return r
}

// treeSum is a digest of release id's tree on d: every path, its type,
// mode and content (a symlink's target), the shared links aside.
func (d *daemon) treeSum(id string) string {
	d.t.Helper()
	root := filepath.Join(d.dir, "data/apps/hello/releases", id)
	h := sha256.New()
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := e.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", rel, info.Mode())
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			fmt.Fprintf(h, "-> %s\n", target)
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%x\n", sha256.Sum256(b))
		}
		return nil
	})
	if err != nil {
		d.t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// lives is the live release of hello on each host, as d sees the fleet.
func (d *daemon) lives() string {
	var out []string
	for _, h := range d.fleetStatus().Hosts {
		if h.State == nil {
			out = append(out, "down")
			continue
		}
		out = append(out, h.State.Apps[0].Live)
	}
	return strings.Join(out, " ")
}

func loadEach(t *testing.T, ds ...*daemon) []*testutil.Load {
	var ls []*testutil.Load
	for _, d := range ds {
		ls = append(ls, testutil.StartLoad(t, "http://"+d.appAddr+"/", 4))
	}
	return ls
}

func finishEach(t *testing.T, ls []*testutil.Load, what string) {
	for i, l := range ls {
		l.Finish(t, fmt.Sprintf("%s on web%d", what, i+1), 20)
	}
}

// TestAPushRollsOutToEveryHostBuiltOnce: three daemons; a push to web1
// builds there only, ships the release, and every host goes live with the
// same id and a byte-identical tree, web1 first, each host's lines
// prefixed with its name, with keep-alive clients on every host losing no
// request. Then `deploy --fleet` and `rollback --fleet --to` move the
// whole fleet by the same ids.
func TestAPushRollsOutToEveryHostBuiltOnce(t *testing.T) {
	d1, d2, d3 := threeHosts(t, "")
	r := newRolloutRepo(t)
	out := r.mustPush(d1)
	if got := d1.lives(); got != "v1 v1 v1" {
		t.Fatalf("first push: %s\n%s", got, out)
	}
	ls := loadEach(t, d1, d2, d3)
	rev := r.commit("second", map[string]string{"message.txt": "two"})
	out = r.mustPush(d1)
	t.Logf("the push's output:\n%s", out)
	for _, want := range []string{"web1: -----> Build done", "web2: -----> Received v2", "web3: -----> Received v2",
		"web2: -----> Deployed v2", "web3: -----> Deployed v2", "Shipped v2 to every host"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the push's output:\n%s", want, out)
		}
	}
	if strings.Index(out, "web1: -----> Cut-over") > strings.Index(out, "web2: -----> Going live") {
		t.Errorf("web2 went live before web1, the canary:\n%s", out)
	}
	if strings.Count(out, "-----> Building:") != 1 {
		t.Errorf("built more than once:\n%s", out)
	}
	if got := d1.lives(); got != "v2 v2 v2" {
		t.Fatalf("after the push: %s\n%s", got, out)
	}
	sum := d1.treeSum("v2")
	for _, d := range []*daemon{d1, d2, d3} {
		d.serves("v2")
		if d.branch() != rev {
			t.Errorf("branch on %s: %s, want %s", d.dir, d.branch(), rev)
		}
		if s := d.treeSum("v2"); s != sum {
			t.Errorf("the tree of v2 differs on %s", d.dir)
		}
	}
	if on := d2.release("v2")["built_on"]; on != "web1" {
		t.Errorf("web2's v2 built_on %v", on)
	}

	// deploy --fleet: the same, from the repository, with --json.
	var res struct {
		OK    bool                `json:"ok"`
		Split map[string][]string `json:"split"`
	}
	cmd := exec.Command(daemonBin, "deploy", "hello", "--fleet", "--json", "-c", d1.config)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	stdout, err := cmd.Output() // the progress goes to stderr
	if jerr := json.Unmarshal(stdout, &res); err != nil || jerr != nil || !res.OK || len(res.Split) != 0 {
		t.Fatalf("deploy --fleet --json: %+v %v %v\n%s", res, err, jerr, stdout)
	}
	if got := d1.lives(); got != "v3 v3 v3" {
		t.Fatalf("after deploy --fleet: %s", got)
	}
	// Ids agree, so rollback --fleet --to names one release everywhere.
	d1.mustCLI("rollback", "hello", "--fleet", "--to", "v1")
	if got := d1.lives(); got != "v1 v1 v1" {
		t.Fatalf("after rollback --fleet --to v1: %s", got)
	}
	finishEach(t, ls, "a rollout, a deploy --fleet and a rollback --fleet")
}

// TestARolloutThatFailsOnTheLastHostIsUndoneEverywhere: the release
// refuses to start on web3; web1 and web2, already switched, go back, the
// push is rejected with a report of each host, the branch stays where it
// was everywhere, and no request fails on any host.
func TestARolloutThatFailsOnTheLastHostIsUndoneEverywhere(t *testing.T) {
	d1, d2, d3 := threeHosts(t, "")
	r := newRolloutRepo(t)
	r.mustPush(d1)
	before := d1.branch()
	ls := loadEach(t, d1, d2, d3)
	r.commit("breaks on web3", map[string]string{"fail-on-web3": "x", "message.txt": "two"})
	out, err := r.push(d1.url(testToken))
	if err == nil {
		t.Fatalf("the push went through:\n%s", out)
	}
	for _, want := range []string{"web2: -----> Deployed v2", "web3: ", "refuses to start on web3", "web2 back on v1", "web1 back on v1"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the push's output:\n%s", want, out)
		}
	}
	if got := d1.lives(); got != "v1 v1 v1" {
		t.Fatalf("after the failed rollout: %s\n%s", got, out)
	}
	for _, d := range []*daemon{d1, d2, d3} {
		d.serves("v1")
		if d.branch() != before {
			t.Errorf("the branch moved on %s", d.dir)
		}
	}
	if st := d3.release("v2")["status"]; st != "failed" {
		t.Errorf("web3's v2 is %v", st)
	}
	if st := d1.release("v2")["status"]; st != "failed" {
		t.Errorf("web1's v2 is %v", st)
	}
	finishEach(t, ls, "a rollout undone")

	// A peer down before the rollout: nothing is built, nothing switches.
	d3.stop()
	r.commit("third", map[string]string{"fail-on-web3": "", "message.txt": "three"})
	out, err = r.push(d1.url(testToken))
	if err == nil || !strings.Contains(out, "web3: unreachable") || !strings.Contains(out, "nothing changed on any host") {
		t.Fatalf("push with web3 down: %v\n%s", err, out)
	}
	if strings.Contains(out, "Building") {
		t.Errorf("built with a peer down:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(d1.dir, "data/apps/hello/releases/v3.json")); err == nil {
		t.Errorf("a release was made with a peer down")
	}
	d1.serves("v1")
	d2.serves("v1")
}

// TestKillingTheEntryHostMidRolloutLeavesCompleteReleasesAndTheNextPushConverges:
// web1 dies (kill -9) in the pause after web2 went live: every host runs
// a complete release, status --fleet shows the split, and the next push
// brings all three to one release.
func TestKillingTheEntryHostMidRolloutLeavesCompleteReleasesAndTheNextPushConverges(t *testing.T) {
	d1, d2, d3 := threeHosts(t, "")
	r := newRolloutRepo(t)
	r.mustPush(d1)
	// A long pause between batches holds the rollout after web2.
	d1.stop()
	cfg, _ := os.ReadFile(d1.config)
	os.WriteFile(d1.config, []byte(strings.Replace(string(cfg), "  token_file: fleet-token\n", "  token_file: fleet-token\n  pause: 10s\n", 1)), 0o644)
	d1.start()

	r.commit("second", map[string]string{"message.txt": "two"})
	pushed := make(chan string, 1)
	go func() { out, _ := r.push(d1.url(testToken)); pushed <- out }()
	testutil.WaitFor(t, 60*time.Second, "web2 to go live with v2", func() bool { return d2.status().Live == "v2" })
	d1.cmd.Process.Signal(syscall.SIGKILL)
	<-d1.exited
	<-pushed
	d2.serves("v2")
	d3.serves("v1")
	if st := d3.release("v2")["status"]; st != "building" {
		t.Errorf("web3's v2, shipped, not live: %v", st)
	}
	d1.start()
	out := d1.mustCLI("status", "--fleet")
	if !strings.Contains(out, "split: hello differs on web3") {
		t.Fatalf("no split shown:\n%s", out)
	}
	if got := d1.lives(); got != "v2 v2 v1" {
		t.Fatalf("after the kill: %s", got)
	}
	r.commit("third", map[string]string{"message.txt": "three"})
	out = r.mustPush(d1)
	if got := d1.lives(); got != "v3 v3 v3" {
		t.Fatalf("the next push did not converge: %s\n%s", got, out)
	}
	if st := d3.release("v2")["status"]; st != "failed" {
		t.Errorf("web3's abandoned v2: %v", st)
	}
}

// TestARolloutReachesItsPeersOverTLS: web2 serves its git listener over
// HTTPS with a certificate of a private CA. Without fleet.ca_file, web1
// refuses to roll out (the peer is unreachable: its certificate is not
// trusted), and nothing changes; with it, the push goes live on both.
func TestARolloutReachesItsPeersOverTLS(t *testing.T) {
	d2 := fleetHost(t, "web2", nil, "")
	cert, key := selfSigned(t, d2.dir)
	d2.stop()
	cfg, _ := os.ReadFile(d2.config)
	os.WriteFile(d2.config, []byte(strings.Replace(string(cfg), "  lock_timeout: 1m\n",
		"  lock_timeout: 1m\n  tls_cert: "+cert+"\n  tls_key: "+key+"\n", 1)), 0o644)
	d2.start()

	d1 := fleetHost(t, "web1", nil, "")
	d1.stop()
	cfg, _ = os.ReadFile(d1.config)
	os.WriteFile(d1.config, append(cfg, fmt.Sprintf("  peers:\n    - {name: web2, url: \"https://%s\"}\n", d2.gitAddr)...), 0o644)
	d1.start()
	r := newRolloutRepo(t)
	out, err := r.push(d1.url(testToken))
	if err == nil || !strings.Contains(out, "web2: unreachable") || !strings.Contains(out, "certificate") {
		t.Fatalf("a peer with an untrusted certificate: %v\n%s", err, out)
	}
	if d2.status().Live != "" {
		t.Fatalf("web2 went live")
	}

	d1.stop()
	cfg, _ = os.ReadFile(d1.config)
	os.WriteFile(d1.config, []byte(strings.Replace(string(cfg), "  token_file: fleet-token\n",
		"  token_file: fleet-token\n  ca_file: "+cert+"\n", 1)), 0o644)
	d1.start()
	out = r.mustPush(d1)
	if got := d1.lives(); got != "v1 v1" {
		t.Fatalf("over TLS: %s\n%s", got, out)
	}
	d2.serves("v1")
}
