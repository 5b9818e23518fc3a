package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// TestKillDuringBuildLeavesAConsistentState: the daemon is killed with
// SIGKILL in the middle of a build. The next start serves the live release
// again, marks the half-built one failed and removes its tree, leaves no
// build process behind, and the branch still names the live revision.
func TestKillDuringBuildLeavesAConsistentState(t *testing.T) {
	gate := t.TempDir()
	d := newDaemon(t, "")
	r := newAppRepo(t)
	rev1 := r.git("rev-parse", "HEAD")
	r.mustPush(d)
	d.stop()
	cfg, _ := os.ReadFile(d.config)
	os.WriteFile(d.config, []byte(strings.Replace(string(cfg), `build: "go build -o bin/hello ."`,
		`build: "touch `+gate+`/building; sleep 300 & while :; do sleep 0.05; done"`, 1)), 0o644)
	d.start()

	r.commit("two", map[string]string{"message.txt": "two"})
	pushed := make(chan string, 1)
	go func() { out, _ := r.push(d.url(testToken)); pushed <- out }()
	testutil.WaitFor(t, 30*time.Second, "the build to start", func() bool {
		_, err := os.Stat(filepath.Join(gate, "building"))
		return err == nil
	})
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	if out := <-pushed; !strings.Contains(out, "rejected") && !strings.Contains(out, "error") {
		t.Fatalf("push survived the daemon's death:\n%s", out)
	}
	v2 := filepath.Join(d.dir, "data/apps/hello/releases/v2")
	d.start()
	testutil.WaitFor(t, 30*time.Second, "workers after restart", func() bool { return len(d.workerPIDs()) == 2 })
	d.serves("v1")
	if st := d.release("v2"); st["status"] != "failed" || !strings.Contains(st["reason"].(string), "interrupted") {
		t.Fatalf("v2 after the crash: %v", st)
	}
	if _, err := os.Stat(v2); err == nil {
		t.Fatal("the half-built tree is still there")
	}
	if d.branch() != rev1 {
		t.Fatal("branch does not name the live release")
	}
	testutil.WaitFor(t, 10*time.Second, "the build's processes to be gone", func() bool {
		procs, _ := filepath.Glob("/proc/[0-9]*/cwd")
		for _, p := range procs {
			if cwd, err := os.Readlink(p); err == nil && strings.HasPrefix(cwd, v2) {
				return false
			}
		}
		return true
	})
}
