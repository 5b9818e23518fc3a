package deployer

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/internal/account"
)

// Two apps run as one user: said at start, naming both; an app of its own
// user is not named.
func TestAppsSharingAUserAreWarnedAbout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("apps run as other users only under root")
	}
	cfg := &config.Config{Apps: map[string]*config.App{
		"a": {Name: "a", User: "nobody"}, "b": {Name: "b", User: "nobody"}, "c": {Name: "c", User: "daemon"},
	}}
	var buf bytes.Buffer
	warnSharedUsers(cfg, slog.New(slog.NewTextHandler(&buf, nil)))
	if !strings.Contains(buf.String(), "apps run as the same user") || !strings.Contains(buf.String(), "apps=a,b") ||
		strings.Count(buf.String(), "\n") != 1 {
		t.Fatalf("log: %s", buf.String())
	}
}

// When the app's user changes, what shared/ holds becomes the new user's:
// what the previous one left, and a file the operator put there as root
// (an .env the app must read).
func TestSharedFollowsAChangeOfUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	from, err := account.Lookup("daemon", "")
	if err != nil {
		t.Fatal(err)
	}
	to, err := account.Lookup("nobody", "")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "shared")
	os.MkdirAll(filepath.Join(dir, "uploads"), 0o700)
	os.WriteFile(filepath.Join(dir, "uploads", "a"), nil, 0o600)
	os.WriteFile(filepath.Join(dir, "roots"), nil, 0o600)
	for _, p := range []string{"", "uploads", "uploads/a"} {
		os.Lchown(filepath.Join(dir, p), int(from.UID), int(from.GID))
	}
	if err := giveShared(dir, to); err != nil {
		t.Fatal(err)
	}
	for p, uid := range map[string]uint32{"": to.UID, "uploads": to.UID, "uploads/a": to.UID, "roots": to.UID} {
		fi, _ := os.Lstat(filepath.Join(dir, p))
		if got := fi.Sys().(*syscall.Stat_t).Uid; got != uid {
			t.Errorf("shared/%s owned by %d, want %d", p, got, uid)
		}
	}
}
