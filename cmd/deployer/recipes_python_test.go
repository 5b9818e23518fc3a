package main

import (
	"strings"
	"testing"
)

// TestRecipeGunicornFlask: docs/recipes/gunicorn-flask.md as written.
func TestRecipeGunicornFlask(t *testing.T) {
	requireCommands(t, "gunicorn")
	requirePython(t, "flask")
	d, r := deployRecipe(t, "gunicorn-flask")
	mustDrain(t, d, r, 8)
}

// TestRecipeDjango: docs/recipes/django.md as written; the migration ran
// against the shared database before the release answered.
func TestRecipeDjango(t *testing.T) {
	requireCommands(t, "gunicorn")
	requirePython(t, "django")
	d, r := deployRecipe(t, "django")
	if body, err := d.get(); err != nil || !strings.Contains(body, "migrations applied") || strings.Contains(body, "(0 migrations") {
		t.Fatalf("GET / = %q, %v: want the migrations applied", body, err)
	}
	mustDrain(t, d, r, 8)
}
