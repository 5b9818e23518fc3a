package main

import (
	"strings"
	"testing"
)

// TestRecipeGunicornFlask: docs/recipes/gunicorn-flask.md as written.
func TestRecipeGunicornFlask(t *testing.T) {
	t.Parallel() // each its own daemon and ports; about 15s each, mostly waiting
	requireCommands(t, "gunicorn")
	requirePython(t, "flask")
	d, r := deployRecipe(t, "gunicorn-flask")
	mustDrain(t, d, r, 8)
}

// TestRecipeDjango: docs/recipes/django.md as written; the migration ran
// against the shared database before the release answered.
func TestRecipeDjango(t *testing.T) {
	t.Parallel() // each its own daemon and ports; about 15s each, mostly waiting
	requireCommands(t, "gunicorn")
	requirePython(t, "django")
	d, r := deployRecipe(t, "django")
	if body, err := d.get(); err != nil || !strings.Contains(body, "migrations applied") || strings.Contains(body, "(0 migrations") {
		t.Fatalf("GET / = %q, %v: want the migrations applied", body, err)
	}
	mustDrain(t, d, r, 8)
}

// TestRecipeUvicornFastAPI: docs/recipes/uvicorn-fastapi.md as written
// drains; plain `uvicorn --fd 3` in the same swap is measured for the page
// (it closes idle keep-alive connections at once), not held to zero.
func TestRecipeUvicornFastAPI(t *testing.T) {
	t.Parallel() // each its own daemon and ports; about 15s each, mostly waiting
	requireCommands(t, "uvicorn")
	requirePython(t, "fastapi", "uvicorn")
	d, r := deployRecipe(t, "uvicorn-fastapi")
	mustDrain(t, d, r, 8)

	t.Run("plain_uvicorn_fd_3", func(t *testing.T) {
		rc := loadRecipe(t, "uvicorn-fastapi")
		rc.app["start"] = "uvicorn --fd 3 main:app"
		d := startAppDaemon(t, rc.app, "PATH="+serverPath)
		r.git("checkout", "-q", "HEAD~1")
		r.git("checkout", "-q", "-B", "main")
		r.mustPush(d)
		swapUnderLoad(t, d, r, 8)
	})
}
