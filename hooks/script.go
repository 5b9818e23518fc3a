package hooks

import "strings"

// Hooks are the git hooks the daemon installs, each the deployer binary itself.
var Hooks = []string{"proc-receive", "post-receive"}

// HookScript is the script of git hook name.
func HookScript(exe, name string) string {
	return "#!/bin/sh\nexec " + shellQuote(exe) + " hook " + name + "\n"
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
