package main

import (
	"io"
	"net/http"
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
	// The workers are adopted (and listed) before the recovery of the disk:
	// wait for the restart to be done with it.
	testutil.WaitFor(t, 30*time.Second, "the recovery of v2", func() bool { return d.release("v2")["status"] != "building" })
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

// TestKillDuringTheDrainLetsBlueFinishItsRequests: the daemon is killed
// after cut-over, while blue drains with requests in flight. The next
// daemon finishes the drain without signalling blue a second time (which
// would cut the worker's drain short and reset those requests): they
// complete, and blue then exits.
func TestKillDuringTheDrainLetsBlueFinishItsRequests(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "open")
	d := newDaemon(t, "") // drain_timeout: 10s
	r := newAppRepo(t)
	slow := withMain(t, r, `mux.HandleFunc("/", `, `mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		for {
			if _, err := os.Stat("`+gate+`"); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		fmt.Fprint(w, answer)
	})
	mux.HandleFunc("/", `)
	slow = strings.Replace(slow, `"strings"`, `"strings"
	"time"`, 1)
	r.commit("slow", map[string]string{"main.go": slow})
	r.mustPush(d)
	blue := d.workerPIDs()

	type result struct {
		body string
		err  error
	}
	const inFlight = 4
	results := make(chan result, inFlight)
	for range inFlight {
		go func() {
			c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := c.Get("http://" + d.appAddr + "/slow")
			if err != nil {
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			results <- result{string(b), err}
		}()
	}
	time.Sleep(300 * time.Millisecond) // the requests reach blue

	r.commit("two", map[string]string{"message.txt": "two"})
	go r.push(d.url(testToken))
	workers := filepath.Join(d.dir, "data/apps/hello/workers.json")
	testutil.WaitFor(t, 60*time.Second, "blue to drain", func() bool {
		b, _ := os.ReadFile(workers)
		return strings.Contains(string(b), `"role": "draining"`)
	})
	time.Sleep(500 * time.Millisecond) // blue got its stop signal
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	d.start()
	testutil.WaitFor(t, 30*time.Second, "the new daemon to adopt v2", func() bool {
		return strings.Contains(d.log.String(), "retiring workers a previous daemon left")
	})
	time.Sleep(time.Second) // time enough for a second stop signal to do harm
	os.WriteFile(gate, nil, 0o644)
	for range inFlight {
		res := <-results
		if res.err != nil || !strings.HasPrefix(res.body, "hello from v1 ") {
			t.Fatalf("a request in flight on draining blue: %q %v\n%s", res.body, res.err, d.log)
		}
	}
	testutil.WaitFor(t, 30*time.Second, "blue to exit", func() bool {
		for _, pid := range blue {
			if alive(pid) {
				return false
			}
		}
		return true
	})
	d.serves("v2")
}
