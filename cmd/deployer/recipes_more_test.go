package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRecipePumaSinatra: docs/recipes/puma-sinatra.md as written.
func TestRecipePumaSinatra(t *testing.T) {
	t.Parallel() // each its own daemon and ports; about 15s each, mostly waiting
	requireCommands(t, "puma", "ruby")
	d, r := deployRecipe(t, "puma-sinatra")
	mustDrain(t, d, r, 8)
}

// TestPumaWithoutActivatedSocketsIsExplained: puma's default keeps an
// activated socket only if a bind names its address, so it closes the
// one it got and binds 0.0.0.0:9292 itself. The push is rejected as soon
// as that is seen, not after health.timeout (5 minutes here), saying so.
func TestPumaWithoutActivatedSocketsIsExplained(t *testing.T) {
	requireCommands(t, "puma", "ruby")
	rc := loadRecipe(t, "puma-sinatra")
	rc.app["health"] = map[string]any{"http": "/healthz", "min_uptime": "1s", "timeout": "5m"}
	d := startAppDaemon(t, rc.app, "PATH="+serverPath)
	r := &appRepo{t: t, dir: filepath.Join(t.TempDir(), "puma")}
	if err := os.CopyFS(r.dir, os.DirFS("../../examples/recipes/puma-sinatra")); err != nil {
		t.Fatal(err)
	}
	r.git("init", "-q", "-b", "main")
	r.commit("default binds", map[string]string{"puma.rb": "threads 4, 4\n"})
	out, err := r.push(d.url(testToken))
	if err == nil {
		t.Fatalf("push accepted:\n%s", out)
	}
	t.Logf("the rejection:\n%s", out)
	for _, want := range []string{"it closed the socket it inherited (fd 3) and can never answer on it",
		"listens on 0.0.0.0:9292 itself: it must serve the socket it inherits as fd 3", "Closing unused activated socket"} {
		if !strings.Contains(out, want) {
			t.Errorf("the rejection lacks %q", want)
		}
	}
}

// TestRecipeExpress: docs/recipes/express.md as written; the build
// installs Express from the npm registry.
func TestRecipeExpress(t *testing.T) {
	t.Parallel() // each its own daemon and ports; about 15s each, mostly waiting
	requireCommands(t, "node", "npm")
	d, r := deployRecipe(t, "express")
	mustDrain(t, d, r, 8)
}

// TestRecipeGoSystemd: docs/recipes/go-systemd.md as written; the build
// fetches go-systemd through the Go module proxy (or the module cache).
func TestRecipeGoSystemd(t *testing.T) {
	t.Parallel() // each its own daemon and ports; about 15s each, mostly waiting
	requireCommands(t, "go")
	d, r := deployRecipe(t, "go-systemd")
	mustDrain(t, d, r, 8)
}
