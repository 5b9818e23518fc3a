package account

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
}

func owner(t *testing.T, p string) uint32 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}

func TestLookup(t *testing.T) {
	needRoot(t)
	a, err := Lookup("nobody", "")
	if err != nil {
		t.Fatal(err)
	}
	if a.User != "nobody" || a.UID == 0 || a.Home == "" || !slices.Contains(a.Groups, a.GID) {
		t.Fatalf("nobody: %+v", a)
	}
	if _, err := Lookup("no-such-user-here", ""); err == nil || !strings.Contains(err.Error(), `no such user "no-such-user-here"`) {
		t.Fatalf("unknown user: %v", err)
	}
	if _, err := Lookup("nobody", "no-such-group-here"); err == nil || !strings.Contains(err.Error(), "no such group") {
		t.Fatalf("unknown group: %v", err)
	}
	if _, err := Lookup("", "daemon"); err == nil {
		t.Fatal("a group without a user was accepted")
	}
	byID, err := Lookup("65534", "1")
	if err != nil {
		t.Fatal(err)
	}
	if byID.UID != 65534 || byID.GID != 1 {
		t.Fatalf("numeric: %+v", byID)
	}
	if none, err := Lookup("", ""); none != nil || err != nil {
		t.Fatalf("empty: %v %v", none, err)
	}
}

// A process started with Credential runs as the account, without root's
// supplementary groups, and with the account's HOME.
func TestCredentialAndEnv(t *testing.T) {
	needRoot(t)
	a, err := Lookup("nobody", "")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `echo "$(id -u) $(id -g) $(id -G) $HOME $USER"`)
	cmd.Env = a.Env([]string{"HOME=/root", "USER=root", "PATH=/usr/bin:/bin"})
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: a.Credential()}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) < 5 || f[0] != "65534" || f[len(f)-2] != a.Home || f[len(f)-1] != "nobody" {
		t.Fatalf("ran as %q", out)
	}
	for _, g := range f[2 : len(f)-2] {
		if g == "0" {
			t.Fatalf("kept root's group: %q", out)
		}
	}
	var nilAcc *Account
	if nilAcc.Credential() != nil || len(nilAcc.Env([]string{"A=1"})) != 1 || nilAcc.ChownTree(t.TempDir(), 0) != nil {
		t.Fatal("a nil account changed something")
	}
}

// ChownTree never follows a symlink: a link to a file of root's stays
// root's, and so does its target.
func TestChownTreeFollowsNoLink(t *testing.T) {
	needRoot(t)
	a, err := Lookup("nobody", "")
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.WriteFile(outside, []byte("root's"), 0o600); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(base, "tree")
	for _, d := range []string{"tree/a/b", "outdir"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tree, "a/b/f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(tree, "a/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "outdir"), filepath.Join(tree, "dirlink")); err != nil {
		t.Fatal(err)
	}
	if err := a.ChownTree(tree, 0); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"tree", "tree/a", "tree/a/b/f", "tree/a/link", "tree/dirlink"} {
		if got := owner(t, filepath.Join(base, p)); got != a.UID {
			t.Errorf("%s owned by %d", p, got)
		}
	}
	for _, p := range []string{"outside", "outdir"} {
		if got := owner(t, filepath.Join(base, p)); got != 0 {
			t.Errorf("followed a link: %s now owned by %d", p, got)
		}
	}
}

func TestReach(t *testing.T) {
	needRoot(t)
	a, err := Lookup("nobody", "")
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	for _, p := range []string{base, filepath.Dir(base)} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	deep := filepath.Join(base, "closed", "data")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(base, "closed"), 0o700); err != nil {
		t.Fatal(err)
	}
	err = a.Reach(deep)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(base, "closed")+" is mode 0700") {
		t.Fatalf("closed dir: %v", err)
	}
	if err := os.Chmod(filepath.Join(base, "closed"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := a.Reach(deep); err != nil {
		t.Fatal(err)
	}
}

// ChownTree follows no hard link out of the tree either: a file with
// another name elsewhere (a previous owner's link to a file of root's, a
// build's link into root's package cache) stays whose it is, unless it was
// the previous owner's already.
func TestChownTreeGivesNoFileLinkedFromOutside(t *testing.T) {
	needRoot(t)
	a, err := Lookup("daemon", "")
	if err != nil {
		t.Fatal(err)
	}
	const prev = 65534 // the tree's previous owner
	base := t.TempDir()
	tree := filepath.Join(base, "tree")
	if err := os.Mkdir(tree, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, uid := range map[string]int{"roots": 0, "prevs": prev} {
		p := filepath.Join(base, name)
		if err := os.WriteFile(p, []byte(name), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(p, filepath.Join(tree, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tree, "plain"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.ChownTree(tree, prev); err != nil {
		t.Fatal(err)
	}
	if got := owner(t, filepath.Join(base, "roots")); got != 0 {
		t.Errorf("a file of root's linked into the tree was given away: now owned by %d", got)
	}
	for _, p := range []string{"tree", "tree/plain", "tree/prevs"} {
		if got := owner(t, filepath.Join(base, p)); got != a.UID {
			t.Errorf("%s owned by %d, want %d", p, got, a.UID)
		}
	}
}
