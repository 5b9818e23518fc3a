package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLifecycleHooksAndSharedPaths: hooks run in order with their
// environment, a failing release hook aborts the deploy and rejects the
// push, on_failure runs, and shared paths persist across releases.
func TestLifecycleHooksAndSharedPaths(t *testing.T) {
	d := newDaemon(t, `    shared: ["data/", "config.env"]
    hooks:
      pre_build: "echo pre $DEPLOYER_RELEASE prev=$DEPLOYER_PREVIOUS_RELEASE rev=${DEPLOYER_REVISION%${DEPLOYER_REVISION#???????}} >> data/hooks.log"
      release: "echo migrating; test ! -e FAIL_RELEASE"
      post_deploy: "echo post $DEPLOYER_RELEASE >> data/hooks.log"
      on_failure: "echo failed $DEPLOYER_RELEASE at $DEPLOYER_FAILED_STEP >> data/hooks.log"
`)
	r := newAppRepo(t)
	out := r.mustPush(d)
	if !strings.Contains(out, "Running release hook") || !strings.Contains(out, "remote:        migrating") {
		t.Fatalf("release hook output not streamed:\n%s", out)
	}
	rev := r.commit("break the release hook", map[string]string{"FAIL_RELEASE": "x"})
	assertFailedPushKeepsLive(t, d, r, "hooks.release")

	shared := filepath.Join(d.dir, "data/apps/hello/shared")
	log, err := os.ReadFile(filepath.Join(shared, "data/hooks.log"))
	if err != nil {
		t.Fatal(err)
	}
	want := "pre v1 prev= rev=" + r.git("rev-parse", "--short=7", "HEAD~1") + "\npost v1\npre v2 prev=v1 rev=" + rev[:7] + "\nfailed v2 at hooks.release\n"
	if string(log) != want {
		t.Fatalf("hooks.log:\n%s\nwant:\n%s", log, want)
	}
	for _, p := range []string{"data", "config.env"} {
		target, err := os.Readlink(filepath.Join(d.dir, "data/apps/hello/releases/v1", p))
		if err != nil || target != filepath.Join(shared, p) {
			t.Fatalf("%s -> %q, %v", p, target, err)
		}
	}
}
