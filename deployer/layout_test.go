package deployer

import (
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/deployer/deployer/releases"
)

func ownerOf(t *testing.T, p string) uint32 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}

// treeOfNobody is release v1's tree as an app that ran as nobody left it,
// with a file of root's outside the tree hard-linked into it.
func treeOfNobody(t *testing.T, ta *testApp) (rel *releases.Release, outside string) {
	t.Helper()
	rel = ta.addRelease("c1", releases.Retired)
	dir := ta.store.Dir(rel.ID)
	if err := os.WriteFile(filepath.Join(dir, "run"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	outside = filepath.Join(t.TempDir(), "roots")
	if err := os.WriteFile(outside, []byte("root's"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(outside, filepath.Join(dir, "linked")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "run")} {
		if err := os.Lchown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	return rel, outside
}

// An app that named a user and names none any more runs as root: its
// trees, which that user (and every other app that runs as it) could
// change, are taken back before root runs anything in them.
func TestGiveTreeTakesBackATreeForRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ta := newTestApp(t, testConfig()) // no user: root
	rel, outside := treeOfNobody(t, ta)
	if err := ta.inTurn(io.Discard, func(j *job) error { return j.giveTree(rel) }); err != nil {
		t.Fatal(err)
	}
	dir := ta.store.Dir(rel.ID)
	for _, p := range []string{dir, filepath.Join(dir, "run")} {
		if got := ownerOf(t, p); got != 0 {
			t.Errorf("%s still owned by %d: root would run code another user can change", p, got)
		}
	}
	if got := ownerOf(t, outside); got != 0 {
		t.Errorf("%s owned by %d", outside, got)
	}
}

// A release built for one user goes live again for another (the app's
// user changed): its tree changes hands, but a file linked into it from
// outside (here one of root's) is not given away with it.
func TestGiveTreeToAnotherUserFollowsNoHardLink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	cfg := testConfig()
	cfg.User = "daemon"
	ta := newTestApp(t, cfg)
	rel, outside := treeOfNobody(t, ta)
	if err := ta.inTurn(io.Discard, func(j *job) error { return j.giveTree(rel) }); err != nil {
		t.Fatal(err)
	}
	dir := ta.store.Dir(rel.ID)
	for _, p := range []string{dir, filepath.Join(dir, "run")} {
		if got := ownerOf(t, p); got != 1 {
			t.Errorf("%s owned by %d, want the new user's (1)", p, got)
		}
	}
	if got := ownerOf(t, outside); got != 0 {
		t.Errorf("a file of root's, hard-linked into the tree, was given to uid %d", got)
	}
}
