package deployer

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/deployer/deployer/config"
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
