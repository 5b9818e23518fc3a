package main

import "testing"

// TestRecipeGunicornFlask: docs/recipes/gunicorn-flask.md as written.
func TestRecipeGunicornFlask(t *testing.T) {
	requireCommands(t, "gunicorn")
	requirePython(t, "flask")
	d, r := deployRecipe(t, "gunicorn-flask")
	mustDrain(t, d, r, 8)
}
