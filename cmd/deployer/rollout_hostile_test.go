package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployer/deployer/control"
	"github.com/deployer/deployer/fleet"
	"github.com/deployer/deployer/releases"
)

// The hostile tests speak to one peer, web2, as a compromised (or buggy)
// entry host would: with the fleet's token, over the peer API, with input
// no honest deployer sends. After each attack the peer must still serve its
// live release, have written nothing outside the release the attack named
// and its incoming directory, hold no half-made release, and say why in
// its log.

// hostilePeer is web2 with hello live as v1 (pushed to it directly), and
// what a shipment of its own revision needs.
type hostilePeer struct {
	t    *testing.T
	d    *daemon
	r    *appRepo
	rev  string // the revision of v1, which web2 holds
	tree []byte // v1's tree, packed as a rollout packs it
	seq  atomic.Int64
}

// forgedMeta is a release's metadata as an attacker would plant it in a
// release tree (a file of the pushed repository): a release that waits to
// go live, whose start command is the attacker's.
const forgedMeta = `{"id": %q, "number": 1, "revision": %q, "branch": "main", "status": "building",
 "built_on": "web1", "start": "touch %s; exec ./start.sh", "workers": 1, "env": {"PWNED": "1"}}`

func newHostilePeer(t *testing.T, extraGit string) *hostilePeer {
	t.Helper()
	d := fleetHost(t, "web2", nil, "")
	if extraGit != "" {
		d.stop()
		cfg, _ := os.ReadFile(d.config)
		cfg = []byte(strings.Replace(string(cfg), "  lock_timeout: 1m\n", "  lock_timeout: 1m\n"+extraGit, 1))
		if err := os.WriteFile(d.config, cfg, 0o644); err != nil {
			t.Fatal(err)
		}
		d.start()
	}
	r := newRolloutRepo(t)
	// The repository holds a release's metadata, as any repository may:
	// v1's tree will hold it too.
	pwned := filepath.Join(d.dir, "PWNED")
	r.commit("forged metadata", map[string]string{
		"evil.json":    fmt.Sprintf(forgedMeta, "v1", strings.Repeat("0", 40), pwned),
		"outside.json": fmt.Sprintf(forgedMeta, "../../../../outside", strings.Repeat("0", 40), pwned),
	})
	r.mustPush(d)
	d.serves("v1")
	p := &hostilePeer{t: t, d: d, r: r, rev: d.branch()}
	var buf bytes.Buffer
	if err := releases.Pack(context.Background(), p.path("data/apps/hello/releases/v1"), &buf); err != nil {
		t.Fatal(err)
	}
	p.tree = buf.Bytes()
	// A directory next to data_dir, where a traversal would land.
	if err := os.MkdirAll(p.path("outside"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// peerClient asks web2 on a connection of each request's own: the
// listener closes a connection on which no request authenticated within
// git.handshake_timeout, which a test's refused requests would add up to.
var peerClient = &http.Client{Timeout: 3 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}

func (p *hostilePeer) path(rel string) string { return filepath.Join(p.d.dir, rel) }

// request sends a request to web2's listener, with the fleet's token unless
// auth says otherwise, and returns the status and body.
func (p *hostilePeer) request(method, path string, body io.Reader, auth func(*http.Request)) (int, string) {
	p.t.Helper()
	req, err := http.NewRequest(method, "http://"+p.d.gitAddr+path, body)
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+fleetToken)
	if auth != nil {
		auth(req)
	}
	resp, err := peerClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// raw sends a request line as given (no client cleans or escapes it).
func (p *hostilePeer) raw(method, target string, body []byte) (int, string) {
	p.t.Helper()
	req, err := http.NewRequest(method, "http://"+p.d.gitAddr+"/", bytes.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	req.URL.Opaque = target // sent as is
	req.Header.Set("Authorization", "Bearer "+fleetToken)
	resp, err := peerClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// op posts v as JSON to an operation of the peer API (raw target) and
// returns the operation's error: its stream's, or the refusal.
func (p *hostilePeer) op(target string, v any) error {
	p.t.Helper()
	body, err := json.Marshal(v)
	if err != nil {
		p.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+p.d.gitAddr+"/", bytes.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	req.URL.Opaque = target
	req.Header.Set("Authorization", "Bearer "+fleetToken)
	resp, err := peerClient.Do(req)
	if err != nil {
		p.t.Fatalf("POST %s: %v", target, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if resp.Header.Get("Content-Type") == "application/json" { // a reply, not a stream (abandon)
		return nil
	}
	return control.ReadStream(resp.Body, io.Discard)
}

// put stages data as part of shipment, in one PUT at offset 0.
func (p *hostilePeer) put(shipment, part string, data []byte) {
	p.t.Helper()
	code, body := p.request(http.MethodPut, fleet.IncomingPath("hello", shipment, part)+"?offset=0", bytes.NewReader(data), nil)
	if code != http.StatusOK {
		p.t.Fatalf("PUT %s of %s: HTTP %d %s", part, shipment, code, body)
	}
}

func describe(name string, data []byte) fleet.Part {
	sum := sha256.Sum256(data)
	return fleet.Part{Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
}

// manifest is an honest manifest of release id: tree (and bundle, if not
// nil) as shipment, of revision rev.
func (p *hostilePeer) manifest(id, rev string, tree, bundle []byte) fleet.Manifest {
	m := fleet.Manifest{Shipment: fmt.Sprintf("hostile-%d", p.seq.Add(1)), From: "web1", ID: id, Revision: rev,
		Branch: "main", Pusher: "mallory", Message: "hostile", Ref: "refs/deployer/fleet/" + id,
		Tree: describe(fleet.PartTree, tree)}
	if bundle != nil {
		m.Bundle = describe(fleet.PartBundle, bundle)
	}
	return m
}

// ship stages tree (and bundle) under m's shipment and asks web2 to make
// the release m describes; it returns the operation's error.
func (p *hostilePeer) ship(m fleet.Manifest, tree, bundle []byte) error {
	p.t.Helper()
	if tree != nil {
		p.put(m.Shipment, fleet.PartTree, tree)
	}
	if bundle != nil {
		p.put(m.Shipment, fleet.PartBundle, bundle)
	}
	return p.op("/_fleet/v1/apps/hello/releases", m)
}

// bundle is a git bundle, made in the test's repository, of ref naming rev,
// without what web2 holds (v1's revision).
func (p *hostilePeer) bundle(ref, rev string) []byte {
	p.t.Helper()
	p.r.git("update-ref", ref, rev)
	defer p.r.git("update-ref", "-d", ref)
	path := filepath.Join(p.t.TempDir(), "b.bundle")
	args := []string{"bundle", "create", "--quiet", path, ref}
	if rev != p.rev {
		args = append(args, "^"+p.rev)
	}
	p.r.git(args...)
	b, err := os.ReadFile(path)
	if err != nil {
		p.t.Fatal(err)
	}
	return b
}

// snapshot lists what web2's directory holds, but for what changes as a
// matter of course: the repository's objects, logs, incoming shipments.
func (p *hostilePeer) snapshot() map[string]bool {
	p.t.Helper()
	out := map[string]bool{}
	skip := []string{"data/apps/hello/repo.git", "data/apps/hello/logs", "data/apps/hello/incoming"}
	err := filepath.WalkDir(p.d.dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(p.d.dir, path)
		if slices.Contains(skip, rel) {
			return filepath.SkipDir
		}
		out[rel] = true
		if e.IsDir() && filepath.Dir(rel) == "data/apps/hello/releases" {
			return filepath.SkipDir // what a release tree holds is the release's
		}
		return nil
	})
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

// intact checks what an attack refused (or a release that failed) must
// leave: live still serving, no new path but those of release allowed (its
// directory and metadata; "" for none), no file PWNED or outside.json
// anywhere, nothing waiting in incoming, no release building but those of
// waiting, no shipped ref but theirs; and the daemon still answering.
func (p *hostilePeer) intact(what string, before map[string]bool, live, allowed string, waiting ...string) {
	p.t.Helper()
	if st := p.d.status(); st.Live != live {
		p.t.Fatalf("%s: %s is live, want %s\n%s", what, st.Live, live, p.d.log)
	}
	p.d.serves(live)
	for path := range p.snapshot() {
		if before[path] {
			continue
		}
		if allowed != "" && (path == "data/apps/hello/releases/"+allowed || path == "data/apps/hello/releases/"+allowed+".json") {
			continue
		}
		if path == "data/apps/hello/workers.json" || strings.HasPrefix(path, "data/run") {
			continue
		}
		p.t.Errorf("%s: a new path %s", what, path)
	}
	for _, f := range []string{"PWNED", "outside.json", "outside/PWNED", "data/PWNED"} {
		if _, err := os.Lstat(p.path(f)); err == nil {
			p.t.Errorf("%s: %s was written", what, f)
		}
	}
	if entries, _ := os.ReadDir(p.path("outside")); len(entries) > 0 {
		p.t.Errorf("%s: written in outside/: %v", what, entries)
	}
	if entries, _ := os.ReadDir(p.path("data/apps/hello/incoming")); len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		p.t.Errorf("%s: left in incoming: %v", what, names)
	}
	metas, _ := filepath.Glob(p.path("data/apps/hello/releases/*.json"))
	for _, m := range metas {
		id := strings.TrimSuffix(filepath.Base(m), ".json")
		rel := p.d.release(id)
		if rel["status"] == "building" && !slices.Contains(waiting, id) {
			p.t.Errorf("%s: %s left building", what, id)
		}
		if rel["status"] == "failed" {
			if _, err := os.Lstat(p.path("data/apps/hello/releases/" + id)); err == nil {
				p.t.Errorf("%s: the tree of the failed %s was left", what, id)
			}
		}
	}
	var want []string
	for _, id := range waiting {
		want = append(want, "refs/deployer/fleet/"+id)
	}
	if got := p.shippedRefs(); !slices.Equal(got, want) {
		p.t.Errorf("%s: shipped refs %v, want %v", what, got, want)
	}
}

func (p *hostilePeer) shippedRefs() []string {
	p.t.Helper()
	out, err := exec.Command("git", "--git-dir", p.path("data/apps/hello/repo.git"),
		"for-each-ref", "--format=%(refname)", "refs/deployer/").Output()
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.Fields(string(out))
}

// logs checks that the daemon's log tells why, in one line that names
// each of words.
func (p *hostilePeer) logs(what string, words ...string) {
	p.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for line := range strings.Lines(p.d.log.String()) {
			ok := true
			for _, w := range words {
				ok = ok && strings.Contains(line, w)
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			p.t.Errorf("%s: no line of the daemon's log names %q", what, words)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHostileFleetTakesNoOtherCredentialThanTheFleetToken: every peer
// endpoint refuses a request without the fleet's token, with a pusher's
// token (basic or bearer), a near miss of the fleet's or another scheme,
// and changes nothing; a flood of such requests neither stops the peer
// from serving its app and its real peers, and each refusal is logged
// with the address it came from.
func TestHostileFleetTakesNoOtherCredentialThanTheFleetToken(t *testing.T) {
	hostileFleet(t)
	p := newHostilePeer(t, "")
	before := p.snapshot()
	auths := map[string]func(*http.Request){
		"no token":            func(r *http.Request) { r.Header.Del("Authorization") },
		"a pusher's basic":    func(r *http.Request) { r.Header.Del("Authorization"); r.SetBasicAuth("alice", testToken) },
		"a pusher's bearer":   func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testToken) },
		"the fleet's, basic":  func(r *http.Request) { r.Header.Del("Authorization"); r.SetBasicAuth("fleet", fleetToken) },
		"empty bearer":        func(r *http.Request) { r.Header.Set("Authorization", "Bearer ") },
		"lowercase scheme":    func(r *http.Request) { r.Header.Set("Authorization", "bearer "+fleetToken) },
		"a prefix of it":      func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+fleetToken[:16]) },
		"it and more":         func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+fleetToken+"0") },
		"two headers, 2nd ok": func(r *http.Request) { r.Header["Authorization"] = []string{"Bearer x", "Bearer " + fleetToken} },
	}
	m, _ := json.Marshal(p.manifest("v2", p.rev, p.tree, nil))
	endpoints := []struct{ method, path, body string }{
		{http.MethodGet, fleet.StatusPath, ""},
		{http.MethodGet, fleet.IncomingPath("hello", "s1", fleet.PartTree), ""},
		{http.MethodPut, fleet.IncomingPath("hello", "s1", fleet.PartTree) + "?offset=0", "data"},
		{http.MethodPost, "/_fleet/v1/apps/hello/releases", string(m)},
		{http.MethodPost, "/_fleet/v1/apps/hello/releases/v1/golive", `{"by": "mallory"}`},
		{http.MethodPost, "/_fleet/v1/apps/hello/releases/v1/abandon", `{"why": "mallory"}`},
		{http.MethodPost, "/_fleet/v1/apps/hello/rollback", `{"by": "mallory"}`},
	}
	for name, auth := range auths {
		for _, e := range endpoints {
			code, body := p.request(e.method, e.path, strings.NewReader(e.body), auth)
			if code != http.StatusUnauthorized {
				t.Errorf("%s, %s %s: HTTP %d %s", name, e.method, e.path, code, body)
			}
		}
	}
	p.intact("refused credentials", before, "v1", "")
	p.logs("a refused token", "fleet", "127.0.0.1")

	// A flood without the token, while a real peer asks and clients use the app.
	var wg sync.WaitGroup
	var refused, other atomic.Int64
	for range 32 {
		wg.Go(func() {
			c := &http.Client{Timeout: 30 * time.Second}
			for range 15 {
				req, _ := http.NewRequest(http.MethodPost, "http://"+p.d.gitAddr+"/_fleet/v1/apps/hello/releases/v1/abandon", strings.NewReader("{}"))
				req.Header.Set("Authorization", "Bearer guess-"+fmt.Sprint(time.Now().UnixNano()))
				resp, err := c.Do(req)
				if err == nil && resp.StatusCode == http.StatusUnauthorized {
					refused.Add(1)
				} else {
					other.Add(1)
				}
				if err == nil {
					resp.Body.Close()
				}
			}
		})
	}
	for range 5 {
		start := time.Now()
		code, body := p.request(http.MethodGet, fleet.StatusPath, nil, nil)
		if code != http.StatusOK || time.Since(start) > 5*time.Second {
			t.Errorf("a real peer's status during the flood: HTTP %d after %s: %s", code, time.Since(start), body)
		}
		p.d.serves("v1")
	}
	wg.Wait()
	if other.Load() != 0 {
		t.Errorf("the flood: %d refused, %d other answers", refused.Load(), other.Load())
	}
	p.intact("a flood", before, "v1", "")
}

// TestHostileFleetNamesInThePathStayInside: names in the URL (app,
// shipment, part, release id) that climb out, %2F-encoded so that no
// cleaning of the path undoes them, or name a file a pushed repository
// planted (a release's metadata of the attacker's making, in v1's own
// tree: releases/v1/evil.json), are refused; nothing is written outside,
// the forged start command never runs, and the live release stays live.
func TestHostileFleetNamesInThePathStayInside(t *testing.T) {
	hostileFleet(t)
	p := newHostilePeer(t, "")
	before := p.snapshot()
	const tree = fleet.PartTree
	for _, target := range []string{
		"/_fleet/v1/apps/..%2F..%2F..%2Foutside/incoming/s1/" + tree,
		"/_fleet/v1/apps/hello%2F..%2F..%2F..%2F..%2Foutside/incoming/s1/" + tree,
		"/_fleet/v1/apps/%2E%2E/incoming/s1/" + tree,
		"/_fleet/v1/apps/hello/incoming/..%2F..%2F..%2F..%2F..%2Foutside/" + tree,
		"/_fleet/v1/apps/hello/incoming/%2E%2E/" + tree,
		"/_fleet/v1/apps/hello/incoming/" + strings.Repeat("a", 65) + "/" + tree,
		"/_fleet/v1/apps/hello/incoming/" + strings.Repeat("a", 5000) + "/" + tree,
		"/_fleet/v1/apps/hello/incoming/S1/" + tree,
		"/_fleet/v1/apps/hello/incoming/s1/..%2F..%2F..%2F..%2F..%2Foutside%2FPWNED",
		"/_fleet/v1/apps/hello/incoming/s1/tree.tar%2F..%2F..%2F..%2F..%2F..%2F..%2Foutside%2FPWNED",
		"/_fleet/v1/apps/hello/incoming/s1/tree.tar%00",
		"/_fleet/v1/apps/hello/incoming/s1/" + tree + "/more",
	} {
		for _, method := range []string{http.MethodPut, http.MethodGet} {
			code, body := p.raw(method, target+"?offset=0", []byte("PWNED"))
			if code < 400 || code >= 500 {
				t.Errorf("%s %.120s: HTTP %d %s", method, target, code, body)
			}
		}
	}
	p.intact("names in the incoming path", before, "v1", "")

	// Release ids: a name of another file, the forged metadata in v1's tree,
	// a name that climbs to a file outside data_dir.
	pwned := filepath.Join(p.d.dir, "PWNED")
	if err := os.WriteFile(p.path("forged.json"), fmt.Appendf(nil, forgedMeta, "../../../../outside", p.rev, pwned), 0o644); err != nil {
		t.Fatal(err)
	}
	before = p.snapshot()
	for _, id := range []string{"v1%2Fevil", "v1%2Foutside", "..%2F..%2F..%2F..%2Fforged", "%2E%2E", "current", "v1.json", "v1%00", strings.Repeat("v", 5000)} {
		err := p.op("/_fleet/v1/apps/hello/releases/"+id+"/golive", fleet.GoLive{By: "mallory"})
		if err == nil {
			t.Errorf("golive %.100s went through", id)
		}
		p.intact("golive "+id, before, "v1", "")
		if err := p.op("/_fleet/v1/apps/hello/releases/"+id+"/abandon", fleet.Abandon{Why: "mallory"}); err != nil && !strings.Contains(err.Error(), "bad release id") {
			t.Errorf("abandon %.100s: %v", id, err)
		}
		if st := p.d.release("v1")["status"]; st != "live" {
			t.Fatalf("abandon %.100s: v1 is %v\n%s", id, st, p.d.log)
		}
		p.intact("abandon "+id, before, "v1", "")
	}
	// Rollback takes its target in the body: no URL to clean.
	for _, to := range []string{"v1/evil", "v1/outside", "../../../../forged", "v0", "1/evil"} {
		if err := p.op("/_fleet/v1/apps/hello/rollback", control.RollbackRequest{To: to, By: "mallory"}); err == nil {
			t.Errorf("rollback to %s went through", to)
		}
		p.intact("rollback to "+to, before, "v1", "")
	}
	if got := p.d.release("v1"); got["start"] != "./start.sh" || got["env"].(map[string]any)["PWNED"] != nil {
		t.Errorf("v1's metadata changed: %v", got)
	}
	p.logs("a bad release id", "bad release id")
}

// TestHostileFleetManifestsAreRefusedAndLeaveNoTrace: manifests no honest
// entry host sends (ids that are no release id or one taken, refs and
// revisions that are not the shipment's, bundles that are not bundles, do
// not name the revision or hold objects that fail fsck, parts that are not
// what was staged) are each refused with one line, before anything is
// made: no release, no ref, nothing staged left, and a release shipped
// earlier and waiting to go live still waits, and goes live.
func TestHostileFleetManifestsAreRefusedAndLeaveNoTrace(t *testing.T) {
	hostileFleet(t)
	p := newHostilePeer(t, "")
	// An honest shipment of v5, waiting for its turn.
	if err := p.ship(p.manifest("v5", p.rev, p.tree, nil), p.tree, nil); err != nil {
		t.Fatalf("an honest shipment: %v\n%s", err, p.d.log)
	}
	before := p.snapshot()
	p.intact("an honest shipment", before, "v1", "v5", "v5")

	// Another commit, which web2 does not have, and the bundle of it.
	other := p.r.commit("another", map[string]string{"message.txt": "other"})
	// A commit that fails fsck (no author's email, a bad date), bundled.
	treeOf := p.r.git("rev-parse", other+"^{tree}")
	badCommit := fmt.Sprintf("tree %s\nparent %s\nauthor mallory 1 +0000\ncommitter mallory <m@x> 1 +0000\n\nbad\n", treeOf, p.rev)
	cmd := exec.Command("git", "hash-object", "-t", "commit", "--literally", "-w", "--stdin")
	cmd.Dir, cmd.Stdin = p.r.dir, strings.NewReader(badCommit)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.TrimSpace(string(out))

	notABundle := make([]byte, 4096)
	rand.Read(notABundle)
	tarOther := tarOfEntries(t, tarFile("x", "y"))
	type shipment struct {
		m            fleet.Manifest
		tree, bundle []byte
	}
	honest := func(id string) shipment {
		return shipment{p.manifest(id, p.rev, p.tree, nil), p.tree, nil}
	}
	with := func(s shipment, edit func(*fleet.Manifest)) shipment { edit(&s.m); return s }
	cases := map[string]shipment{
		"id v0":           honest("v0"),
		"id v01":          honest("v01"),
		"id v+6":          honest("v+6"),
		"id v-6":          honest("v-6"),
		"id 6":            honest("6"),
		"id empty":        honest(""),
		"id ../v6":        honest("../v6"),
		"id v6/../../v6":  honest("v6/../../v6"),
		"id huge":         honest("v999999999999"),
		"id max int":      honest("v9223372036854775807"),
		"id past max int": honest("v9223372036854775808"),
		"id live":         honest("v1"),
		"id waiting": func() shipment {
			b := p.bundle("refs/deployer/fleet/v5", other)
			return shipment{p.manifest("v5", other, p.tree, b), p.tree, b}
		}(),
		"ref main":          with(honest("v6"), func(m *fleet.Manifest) { m.Ref = "refs/heads/main" }),
		"ref HEAD":          with(honest("v6"), func(m *fleet.Manifest) { m.Ref = "HEAD" }),
		"ref of another id": with(honest("v6"), func(m *fleet.Manifest) { m.Ref = "refs/deployer/fleet/v7" }),
		"revision HEAD":     with(honest("v6"), func(m *fleet.Manifest) { m.Revision = "HEAD" }),
		"revision main":     with(honest("v6"), func(m *fleet.Manifest) { m.Revision = "refs/heads/main" }),
		"revision short":    with(honest("v6"), func(m *fleet.Manifest) { m.Revision = p.rev[:12] }),
		"revision upper":    with(honest("v6"), func(m *fleet.Manifest) { m.Revision = strings.ToUpper(p.rev) }),
		"revision option":   with(honest("v6"), func(m *fleet.Manifest) { m.Revision = "--stdin" }),
		"revision unknown":  with(honest("v6"), func(m *fleet.Manifest) { m.Revision = strings.Repeat("ab", 20) }),
		"branch":            with(honest("v6"), func(m *fleet.Manifest) { m.Branch = "other" }),
		"bundle of another revision": func() shipment {
			b := p.bundle("refs/deployer/fleet/v6", other)
			return shipment{p.manifest("v6", p.rev, p.tree, b), p.tree, b}
		}(),
		"bundle not a bundle": {p.manifest("v6", other, p.tree, notABundle), p.tree, notABundle},
		"bundle failing fsck": func() shipment {
			b := p.bundle("refs/deployer/fleet/v6", bad)
			return shipment{p.manifest("v6", bad, p.tree, b), p.tree, b}
		}(),
		"bundle named as the tree": func() shipment {
			b := p.bundle("refs/deployer/fleet/v6", other)
			s := shipment{p.manifest("v6", other, p.tree, b), p.tree, b}
			s.m.Bundle.Name = fleet.PartTree
			return s
		}(),
		"tree checksum":      with(honest("v6"), func(m *fleet.Manifest) { m.Tree = describe(fleet.PartTree, tarOther) }),
		"tree size":          with(honest("v6"), func(m *fleet.Manifest) { m.Tree.Size-- }),
		"tree named oddly":   with(honest("v6"), func(m *fleet.Manifest) { m.Tree.Name = "../tree.tar" }),
		"tree never sent":    {p.manifest("v6", p.rev, p.tree, nil), nil, nil},
		"bundle never sent":  {p.manifest("v6", other, p.tree, notABundle), p.tree, nil},
		"shipment climbs":    with(honest("v6"), func(m *fleet.Manifest) { m.Shipment = "../../../../outside" }),
		"shipment empty":     with(honest("v6"), func(m *fleet.Manifest) { m.Shipment = "" }),
		"from with newlines": with(honest("v6"), func(m *fleet.Manifest) { m.From = "web1\nlevel=ERROR msg=forged"; m.Tree.SHA256 = "x" }),
	}
	for name, c := range cases {
		shipment := c.m.Shipment
		if !regexpShipment(shipment) {
			shipment = fmt.Sprintf("hostile-x%d", p.seq.Add(1))
		}
		if c.tree != nil {
			p.put(shipment, fleet.PartTree, c.tree)
		}
		if c.bundle != nil {
			p.put(shipment, fleet.PartBundle, c.bundle)
		}
		err := p.op("/_fleet/v1/apps/hello/releases", c.m)
		if err == nil {
			t.Errorf("%s: made a release", name)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: not one line: %q", name, err)
		}
		if shipment != c.m.Shipment { // the manifest names another: what was staged is the sender's to clear
			os.RemoveAll(p.path("data/apps/hello/incoming/" + shipment))
		}
		p.intact(name+" ("+err.Error()+")", before, "v1", "", "v5")
		if st := p.d.release("v5"); st["status"] != "building" || st["revision"] != p.rev {
			t.Errorf("%s: the waiting v5 is now %v %v", name, st["status"], st["revision"])
		}
		if got := p.r.git("--git-dir", p.path("data/apps/hello/repo.git"), "rev-parse", "refs/deployer/fleet/v5"); got != p.rev {
			t.Errorf("%s: the waiting v5's ref names %s, not %s", name, got, p.rev)
		}
		p.logs(name, "fleet", "release="+c.m.ID)
	}
	p.t = p.r.t
	// The waiting release still goes live, and serves.
	if err := p.op("/_fleet/v1/apps/hello/releases/v5/golive", fleet.GoLive{By: "web1"}); err != nil {
		t.Fatalf("golive v5 after the hostile manifests: %v\n%s", err, p.d.log)
	}
	p.d.serves("v5")
	// And an honest release shipped later gets an honest next number.
	var st fleet.Host
	_, body := p.request(http.MethodGet, fleet.StatusPath, nil, nil)
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Apps[0].Next != 6 {
		t.Errorf("next release number: %+v %v", st, err)
	}
}

func regexpShipment(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func tarFile(name, body string) tar.Header {
	return tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), Linkname: body}
}

// tarOfEntries writes headers as tar.Writer does, which checks none of
// them; a regular file's content is its Linkname (cleared).
func tarOfEntries(t *testing.T, hs ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		body := ""
		if h.Typeflag == tar.TypeReg {
			body, h.Linkname = h.Linkname, ""
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestHostileFleetTreesFailTheReleaseAndLeaveNothing: trees that try to
// write outside the release (symlink then write through it, absolute
// names, dot-dot, hard links, devices), claim a gigantic size, hold more
// than git.max_release_size, are cut short or are no tar at all, each with
// honest checksums: the release ends failed with one line of reason, its
// tree and its ref gone, nothing written outside, the live release serving.
func TestHostileFleetTreesFailTheReleaseAndLeaveNothing(t *testing.T) {
	hostileFleet(t)
	p := newHostilePeer(t, "  max_release_size: 24MiB\n")
	outside := p.path("outside")
	huge := func() []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "huge", Mode: 0o644, Size: 1 << 40})
		tw.Flush() // fails, having written the header
		buf.Write(make([]byte, 4096))
		return buf.Bytes()
	}()
	big := func() []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		chunk := make([]byte, 1<<20)
		rand.Read(chunk)
		for i := range 30 {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("f%d", i), Mode: 0o644, Size: 1 << 20})
			tw.Write(chunk)
		}
		tw.Close()
		return buf.Bytes()
	}()
	notATar := make([]byte, 10000)
	rand.Read(notATar)
	trees := map[string][]byte{
		"symlink out then write": tarOfEntries(t,
			tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: outside, Mode: 0o777}, tarFile("l/PWNED", "x")),
		"symlink climbing then write": tarOfEntries(t,
			tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "../../../../../outside", Mode: 0o777}, tarFile("l/PWNED", "x")),
		"symlink then file over it": tarOfEntries(t,
			tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: filepath.Join(outside, "PWNED"), Mode: 0o777}, tarFile("l", "x")),
		"absolute":              tarOfEntries(t, tarFile(filepath.Join(outside, "PWNED"), "x")),
		"dot-dot":               tarOfEntries(t, tarFile("../../../../../outside/PWNED", "x")),
		"dot-dot in":            tarOfEntries(t, tarFile("a/../../PWNED", "x")),
		".git":                  tarOfEntries(t, tarFile(".git/hooks/post-update", "x")),
		"hard link out":         tarOfEntries(t, tar.Header{Typeflag: tar.TypeLink, Name: "passwd", Linkname: "/etc/passwd"}),
		"hard link in":          tarOfEntries(t, tarFile("a", "x"), tar.Header{Typeflag: tar.TypeLink, Name: "b", Linkname: "a"}),
		"char device":           tarOfEntries(t, tar.Header{Typeflag: tar.TypeChar, Name: "mem", Mode: 0o666, Devmajor: 1, Devminor: 1}),
		"block device":          tarOfEntries(t, tar.Header{Typeflag: tar.TypeBlock, Name: "sda", Mode: 0o666, Devmajor: 8}),
		"fifo":                  tarOfEntries(t, tar.Header{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o666}),
		"gigantic size":         huge,
		"over max_release_size": big,
		"cut short":             p.tree[:len(p.tree)/2+100],
		"not a tar":             notATar,
	}
	n := 1
	for name, tree := range trees {
		n++
		id := fmt.Sprint("v", n)
		before := p.snapshot()
		err := p.ship(p.manifest(id, p.rev, tree, nil), tree, nil)
		if err == nil {
			t.Errorf("%s: %s was made", name, id)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: not one line: %q", name, err)
		}
		if st := p.d.release(id)["status"]; st != "failed" {
			t.Errorf("%s: %s is %v", name, id, st)
		}
		p.intact(name+" ("+err.Error()+")", before, "v1", id)
		p.logs(name, "deploy failed", id)
	}
}

// TestHostileFleetGoLiveAndAbandonOnlyMoveAWaitingRelease: golive of a
// release never shipped, already live, failed, or named oddly is refused;
// abandon of the live release (or a retired one) is ignored, never fails
// it; two golives at once of one release put it live once, of two
// releases put one live and refuse the other; and a manifest's start,
// env or workers are not the peer's to take.
func TestHostileFleetGoLiveAndAbandonOnlyMoveAWaitingRelease(t *testing.T) {
	hostileFleet(t)
	p := newHostilePeer(t, "")
	before := p.snapshot()
	for _, id := range []string{"v9", "v1", "v0", "v01", "current"} {
		if err := p.op("/_fleet/v1/apps/hello/releases/"+id+"/golive", fleet.GoLive{By: "mallory"}); err == nil {
			t.Errorf("golive %s went through", id)
		}
	}
	p.intact("golive of no waiting release", before, "v1", "")
	// abandon of the live release: ignored.
	if err := p.op("/_fleet/v1/apps/hello/releases/v1/abandon", fleet.Abandon{Why: "mallory", Shipment: "../../../../outside"}); err != nil {
		t.Errorf("abandon of the live release: %v", err)
	}
	if st := p.d.release("v1")["status"]; st != "live" {
		t.Fatalf("abandon of the live release made it %v", st)
	}
	p.intact("abandon of the live release", before, "v1", "")

	// A shipment that carries a start command, an env and workers of its own.
	m := p.manifest("v2", p.rev, p.tree, nil)
	b, _ := json.Marshal(m)
	var loose map[string]any
	json.Unmarshal(b, &loose)
	pwned := p.path("PWNED")
	loose["start"], loose["env"], loose["workers"], loose["user"] = "touch "+pwned+"; exec ./start.sh", map[string]string{"PWNED": "1"}, 7, "root"
	loose["status"], loose["number"] = "live", 1
	p.put(m.Shipment, fleet.PartTree, p.tree)
	if err := p.op("/_fleet/v1/apps/hello/releases", loose); err != nil {
		t.Fatalf("a shipment with extra fields: %v", err)
	}
	if rel := p.d.release("v2"); rel["start"] != "./start.sh" || rel["workers"] != 2.0 || rel["env"].(map[string]any)["PWNED"] != nil || rel["status"] != "building" {
		t.Fatalf("the shipment's own start, env or workers were taken: %v", rel)
	}
	// A failed one: refused.
	notATar := []byte(strings.Repeat("x", 1024))
	if err := p.ship(p.manifest("v3", p.rev, notATar, nil), notATar, nil); err == nil {
		t.Fatal("not a tar: made")
	}
	if err := p.op("/_fleet/v1/apps/hello/releases/v3/golive", fleet.GoLive{By: "mallory"}); err == nil {
		t.Error("golive of a failed release went through")
	}
	// v3 arriving abandoned v2 (a later rollout arrived): ship v2 again as v4, twice at once golive.
	if err := p.ship(p.manifest("v4", p.rev, p.tree, nil), p.tree, nil); err != nil {
		t.Fatalf("ship v4: %v", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, id := range []string{"v4", "v4", "v2"} {
		wg.Go(func() {
			errs[i] = p.op("/_fleet/v1/apps/hello/releases/"+id+"/golive", fleet.GoLive{By: fmt.Sprint("racer", i)})
		})
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) || errs[2] == nil {
		t.Fatalf("golive v4 twice and v2 at once: %v", errs)
	}
	p.d.serves("v4")
	if _, err := os.Lstat(pwned); err == nil {
		t.Error("the shipment's start command ran")
	}
	// abandon of the live v4 and of the retired v1: ignored.
	for _, id := range []string{"v4", "v1"} {
		if err := p.op("/_fleet/v1/apps/hello/releases/"+id+"/abandon", fleet.Abandon{Why: "mallory"}); err != nil {
			t.Errorf("abandon of %s: %v", id, err)
		}
	}
	if st := p.d.release("v4")["status"]; st != "live" {
		t.Fatalf("abandon of the live release made it %v", st)
	}
	if st := p.d.release("v1")["status"]; st != "retired" {
		t.Fatalf("abandon of the retired v1 made it %v", st)
	}
	p.d.serves("v4")
	// The fleet can still roll it back.
	if err := p.op("/_fleet/v1/apps/hello/rollback", control.RollbackRequest{To: "v1", By: "web1"}); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	p.d.serves("v1")
}

// TestHostileFleetUploadsAreBoundedAndCannotWedgeThePeer: PUTs with a
// negative, unparsable, unheld or huge offset, without a Content-Length,
// over the part's limit are refused before the body; a body that trickles
// does not stop other uploads, status, or an unpack of another shipment,
// and an unpack of the shipment it feeds fails cleanly.
func TestHostileFleetUploadsAreBoundedAndCannotWedgeThePeer(t *testing.T) {
	hostileFleet(t)
	p := newHostilePeer(t, "")
	before := p.snapshot()
	path := fleet.IncomingPath("hello", "s1", fleet.PartTree)
	for _, c := range []struct {
		offset string
		want   int
	}{
		{"-1", 400}, {"abc", 400}, {"", 400}, {"0x10", 400}, {"10", 409},
		{"9223372036854775807", 413}, {"9223372036854775808", 400}, {"4611686018427387904", 413},
	} {
		code, body := p.request(http.MethodPut, path+"?offset="+c.offset, strings.NewReader("data"), nil)
		if code != c.want {
			t.Errorf("offset %q: HTTP %d %s, want %d", c.offset, code, body, c.want)
		}
	}
	// No Content-Length: chunked.
	code, body := p.request(http.MethodPut, path+"?offset=0", io.MultiReader(strings.NewReader("chunked")), nil)
	if code != http.StatusLengthRequired {
		t.Errorf("chunked: HTTP %d %s", code, body)
	}
	// A Content-Length over the part's limit is refused before its body.
	conn, err := net.Dial("tcp", p.d.gitAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT %s?offset=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", path, fleetToken, int64(1)<<50)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line := make([]byte, 12)
	io.ReadFull(conn, line)
	conn.Close()
	if !strings.Contains(string(line), "413") {
		t.Errorf("a part of a PiB: %q", line)
	}
	p.intact("bad uploads", before, "v1", "")

	// A trickling body.
	slow, err := net.Dial("tcp", p.d.gitAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	m := p.manifest("v2", p.rev, p.tree, nil)
	fmt.Fprintf(slow, "PUT %s?offset=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", fleet.IncomingPath("hello", m.Shipment, fleet.PartTree), fleetToken, len(p.tree))
	slow.Write(p.tree[:1000])
	deadline := time.Now().Add(10 * time.Second)
	for { // the PUT is writing: it holds what came
		_, body := p.request(http.MethodGet, fleet.IncomingPath("hello", m.Shipment, fleet.PartTree), nil, nil)
		if strings.Contains(body, `"size":1000`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the trickle never arrived: %s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Unpack while it comes: refused, cleanly.
	if err := p.op("/_fleet/v1/apps/hello/releases", m); err == nil || !strings.Contains(err.Error(), "still being received") {
		t.Errorf("unpack of a part still coming: %v", err)
	}
	// Others go on.
	m3 := p.manifest("v3", p.rev, p.tree, nil)
	start := time.Now()
	if err := p.ship(m3, p.tree, nil); err != nil {
		t.Fatalf("an honest shipment beside a trickle: %v", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("an honest shipment beside a trickle took %s", time.Since(start))
	}
	slow.Write(p.tree[1000:2000])
	slow.Close()
	time.Sleep(200 * time.Millisecond)
	p.intact("a trickle", before, "v1", "v3", "v3")
}

// TestHostileFleetRequestBodiesAreBounded: a request body of 64 MiB of
// JSON to each operation is refused once it is clearly no request (a
// peer's real request is a few hundred bytes), not read to its end or
// held in memory; the peer goes on serving.
func TestHostileFleetRequestBodiesAreBounded(t *testing.T) {
	hostileFleet(t)
	p := newHostilePeer(t, "")
	before := p.snapshot()
	for _, target := range []string{
		"/_fleet/v1/apps/hello/releases",
		"/_fleet/v1/apps/hello/releases/v1/golive",
		"/_fleet/v1/apps/hello/releases/v1/abandon",
		"/_fleet/v1/apps/hello/rollback",
	} {
		body := &endlessJSON{limit: 64 << 20}
		req, _ := http.NewRequest(http.MethodPost, "http://"+p.d.gitAddr+target, body)
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer "+fleetToken)
		start := time.Now()
		resp, err := peerClient.Do(req)
		sent := body.n.Load()
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && !strings.Contains(string(b), `"error"`) {
				t.Errorf("%s: a body of 64 MiB taken: %s", target, b)
			}
			if resp.StatusCode != http.StatusOK && strings.Count(strings.TrimSpace(string(b)), "\n") > 0 {
				t.Errorf("%s: not one line: %s", target, b)
			}
		}
		if sent > 16<<20 {
			t.Errorf("%s: read %d MiB of a request body before refusing it (%s, %v)", target, sent>>20, time.Since(start), err)
		}
		p.d.serves("v1")
	}
	p.intact("huge bodies", before, "v1", "")
}

// endlessJSON is the start of a JSON object whose string never ends, up to
// limit bytes.
type endlessJSON struct {
	n     atomic.Int64
	limit int64
}

func (e *endlessJSON) Read(b []byte) (int, error) {
	n := e.n.Load()
	if n >= e.limit {
		return 0, io.EOF
	}
	if n == 0 {
		k := copy(b, `{"shipment": "`)
		e.n.Add(int64(k))
		return k, nil
	}
	k := min(int64(len(b)), e.limit-n)
	for i := range k {
		b[i] = 'a'
	}
	e.n.Add(k)
	return int(k), nil
}

// TestAPeerCannotPushTheFleetsReleaseNumbersToTheirEnd: the entry host
// takes the highest release number its peers call free (fleet.App.Next)
// as the rollout's; a compromised peer that says 999999999 makes the entry
// host's release that number, and every push after it fails (no number
// left), on the entry host and, through its rollouts, on the fleet.
func TestAPeerCannotPushTheFleetsReleaseNumbersToTheirEnd(t *testing.T) {
	hostileFleet(t)
	t.Skip("FINDING (low, availability, compromised peer): planRollout trusts each peer's Next; a peer answering next=999999999 makes the rollout's release v999999999 on every host, after which no release number is left (releases.MaxNumber) and every push fails; the entry host should refuse a Next far beyond its own and the other peers' (or a peer whose Next lies about the releases it lists)")
	liar := &lyingPeer{next: releases.MaxNumber}
	srv := httptestServer(t, liar)
	d1 := fleetHost(t, "web1", map[string]string{"web2": strings.TrimPrefix(srv, "http://")}, "")
	r := newRolloutRepo(t)
	r.mustPush(d1)
	r.commit("second", map[string]string{"message.txt": "two"})
	out, err := r.push(d1.url(testToken))
	if err != nil || d1.status().Live == fmt.Sprint("v", releases.MaxNumber) {
		t.Fatalf("a peer's next of %d: live %s, %v\n%s", releases.MaxNumber, d1.status().Live, err, out)
	}
}

// lyingPeer answers the fleet's requests as a peer that takes every
// shipment, and says its next free release number is next.
type lyingPeer struct {
	next int
	mu   sync.Mutex
	held map[string]int64
}

func (l *lyingPeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+fleetToken {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held == nil {
		l.held = map[string]int64{}
	}
	switch {
	case r.URL.Path == fleet.StatusPath:
		json.NewEncoder(w).Encode(fleet.Host{Name: "web2", Protocol: fleet.Protocol, Free: 1 << 40,
			Apps: []fleet.App{{App: "hello", Branch: "main", Next: l.next}}})
	case strings.Contains(r.URL.Path, "/incoming/"):
		if r.Method == http.MethodPut {
			n, _ := io.Copy(io.Discard, r.Body)
			l.held[r.URL.Path] += n
		}
		fmt.Fprintf(w, `{"size": %d}`+"\n", l.held[r.URL.Path])
	default:
		io.WriteString(w, `{"ok": true}`+"\n")
	}
}

func httptestServer(t *testing.T, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// hostileFleet skips these tests unless DEPLOYER_FLEET_HOSTILE=1: each
// starts daemons and runs dozens of attacks, minutes in all, too long for
// every run of the suite. The unit tests of what they found (releases ids,
// fleet staging, bundle fsck) run always.
func hostileFleet(t *testing.T) {
	if os.Getenv("DEPLOYER_FLEET_HOSTILE") == "" {
		t.Skip("hostile-input review of the fleet's peer API: set DEPLOYER_FLEET_HOSTILE=1")
	}
}
