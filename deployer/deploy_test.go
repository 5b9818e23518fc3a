package deployer

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/releases"
)

// gitWork is a working copy that pushes to an app's bare repository.
type gitWork struct {
	t    *testing.T
	dir  string
	bare *Repo
}

func newGitWork(t *testing.T) *gitWork {
	t.Helper()
	bare, err := InitRepo(filepath.Join(t.TempDir(), "repo.git"), "main")
	if err != nil {
		t.Fatal(err)
	}
	w := &gitWork{t: t, dir: t.TempDir(), bare: bare}
	w.git("init", "-q", "--initial-branch=main")
	return w
}

func (w *gitWork) git(args ...string) string {
	w.t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = w.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes files, commits them with message and pushes the commit to
// the bare repository under refs/pushed/REV, as receive-pack leaves it
// before the deploy moves the branch. It returns the commit id.
func (w *gitWork) commit(message string, files map[string]string) string {
	w.t.Helper()
	for name, body := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(w.dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(w.dir, name), []byte(body), 0o755); err != nil {
			w.t.Fatal(err)
		}
	}
	w.git("add", "-A")
	w.git("commit", "-q", "-m", message)
	rev := w.git("rev-parse", "HEAD")
	w.git("push", "-q", w.bare.Path(), "HEAD:refs/pushed/"+rev)
	return rev
}

// newGitApp is a test app on a real git repository.
func newGitApp(t *testing.T, configure func(cfg *testAppConfig)) (*testApp, *gitWork) {
	t.Helper()
	cfg := testConfig()
	cfg.Start = ""
	if configure != nil {
		configure(cfg)
	}
	w := newGitWork(t)
	ta := newTestApp(t, cfg)
	ta.App.repo = w.bare
	return ta, w
}

type testAppConfig = config.App

func (ta *testApp) push(w *gitWork, rev string, out io.Writer) error {
	ref := branchRef("main")
	return ta.deploy(context.Background(), Push{Ref: ref, Old: head(w.bare, ref), New: rev, Pusher: "alice"}, out)
}

// TestDeployBuildsChecksOutAndPutsTheReleaseLive: two pushes each make a
// release from the pushed tree, run the build and hooks in it with the
// release's environment, link shared paths, go live with the Procfile's
// start command, move the branch and record the deploy.
func TestDeployBuildsChecksOutAndPutsTheReleaseLive(t *testing.T) {
	ta, w := newGitApp(t, func(cfg *testAppConfig) {
		cfg.Build = `echo "built $DEPLOYER_RELEASE after [$DEPLOYER_PREVIOUS_RELEASE]" > built.txt`
		cfg.Shared = []string{"data/", "config.ini"}
		cfg.Hooks.PreBuild = "touch pre_build.ran"
		cfg.Hooks.Release = "touch release.ran"
		cfg.Hooks.PostDeploy = "touch post_deploy.ran"
	})
	rev1 := w.commit("first\n\nbody", map[string]string{"Procfile": "web: ./serve --port 1\n", "data/junk": "x"})
	var out syncBuf
	if err := ta.push(w, rev1, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	rev2 := w.commit("second", map[string]string{"message.txt": "two"})
	if err := ta.push(w, rev2, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if b, _ := w.bare.Resolve(branchRef("main")); b != rev2 || ta.current() != "v2" {
		t.Fatalf("branch %s current %s", b, ta.current())
	}
	dir := ta.store.Dir("v2")
	if b, _ := os.ReadFile(filepath.Join(dir, "built.txt")); string(b) != "built v2 after [v1]\n" {
		t.Fatalf("built.txt: %q", b)
	}
	for _, f := range []string{"pre_build.ran", "release.ran", "post_deploy.ran", "message.txt"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if l, err := os.Readlink(filepath.Join(dir, "data")); err != nil || l != filepath.Join(ta.dir, "shared", "data") {
		t.Fatalf("shared data/: %q %v", l, err)
	}
	rel, _ := ta.store.Get("v2")
	if rel.Status != releases.Live || rel.Start != "./serve --port 1" || rel.Message != "second" || rel.Pusher != "alice" {
		t.Fatalf("v2: %+v", rel)
	}
	if ta.status("v1") != releases.Retired {
		t.Fatalf("v1 is %s", ta.status("v1"))
	}
	if green := ta.starter.last(); green.Release() != "v2" || green.spec.Start != "./serve --port 1" || green.isStopped() {
		t.Fatalf("green %+v", green.spec)
	}
	e := ta.store.LastEvent("deploy")
	if e == nil || e.Release != "v2" || e.From != "v1" {
		t.Fatalf("ledger: %+v", e)
	}
	for _, phase := range []string{"receive", "checkout", "build", "preflight", "green"} {
		if _, ok := e.Phases[phase]; !ok {
			t.Errorf("no %s phase in %+v", phase, e.Phases)
		}
	}
	log, _ := os.ReadFile(ta.store.BuildLog("v2"))
	contains(t, "build log", string(log), "Build done")
	contains(t, "output", out.String(), "Deployed v2 in ")
	contains(t, "output", out.String(), "Linked shared paths: data/ config.ini")
}

// TestProcfileReleaseLineRunsAsTheReleaseHook: Heroku's release: line runs
// where hooks.release would, before preflight, when the config sets none;
// a configured hooks.release wins; a failing release: line rejects.
func TestProcfileReleaseLineRunsAsTheReleaseHook(t *testing.T) {
	ta, w := newGitApp(t, nil)
	rev := w.commit("one", map[string]string{"Procfile": "# a comment: not a process\nweb: ./serve\nrelease: echo $DEPLOYER_RELEASE > release.ran\n"})
	var out syncBuf
	if err := ta.push(w, rev, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if b, _ := os.ReadFile(filepath.Join(ta.store.Dir("v1"), "release.ran")); string(b) != "v1\n" {
		t.Fatalf("release.ran: %q\n%s", b, out.String())
	}
	contains(t, "output", out.String(), "Running release hook: echo $DEPLOYER_RELEASE > release.ran")

	rev = w.commit("two", map[string]string{"Procfile": "web: ./serve\nrelease: exit 3\n"})
	if err := ta.push(w, rev, &out); err == nil || ta.current() != "v1" {
		t.Fatalf("a failing release: line deployed: %v, live %s", err, ta.current())
	}

	ta2, w2 := newGitApp(t, func(cfg *testAppConfig) { cfg.Hooks.Release = "touch configured.ran" })
	rev = w2.commit("one", map[string]string{"Procfile": "web: ./serve\nrelease: touch procfile.ran\n"})
	if err := ta2.push(w2, rev, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ta2.store.Dir("v1"), "configured.ran")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ta2.store.Dir("v1"), "procfile.ran")); err == nil {
		t.Fatal("the Procfile's release: line ran besides hooks.release")
	}
}

// TestFailedBuildIsRecordedRunsOnFailureAndChangesNothing.
func TestFailedBuildIsRecordedRunsOnFailureAndChangesNothing(t *testing.T) {
	ta, w := newGitApp(t, func(cfg *testAppConfig) {
		cfg.Start = "./run"
		cfg.Build = "echo compiling; exit 3"
		cfg.Hooks.OnFailure = `echo "$DEPLOYER_FAILED_STEP" > "$DEPLOYER_RELEASE_DIR/../failed_step"`
	})
	rev := w.commit("broken", map[string]string{"main.go": "package main"})
	var out syncBuf
	err := ta.push(w, rev, &out)
	if !errors.Is(err, ErrBuild) || !strings.HasPrefix(err.Error(), "build: build failed: exit status 3") {
		t.Fatalf("err %v", err)
	}
	rel, _ := ta.store.Get("v1")
	if rel.Status != releases.Failed || !strings.HasPrefix(rel.Reason, "build: ") {
		t.Fatalf("v1: %+v", rel)
	}
	if step, _ := os.ReadFile(filepath.Join(ta.dir, "releases", "failed_step")); string(step) != "build\n" {
		t.Fatalf("on_failure saw step %q", step)
	}
	if _, err := os.Stat(ta.store.Dir("v1")); err != nil {
		t.Fatalf("the tree of a failed build is kept for inspection (README, Retention): %v", err)
	}
	if _, err := ta.store.Current(); !errors.Is(err, releases.ErrNoCurrent) {
		t.Fatalf("current: %v", err)
	}
	if _, err := w.bare.Resolve(branchRef("main")); err == nil {
		t.Fatal("the branch was created")
	}
	if ta.starter.last() != nil {
		t.Fatal("a pool was started")
	}
	if e := ta.store.LastEvent("failure"); e == nil || e.Release != "v1" || e.Of != "deploy" {
		t.Fatalf("ledger: %+v", e)
	} else if e.Phases["build"] <= 0 || e.Phases["checkout"] <= 0 || len(e.Phases) != 3 {
		t.Fatalf("the failure has not the steps that ran (receive, checkout, build): %v", e.Phases)
	}
	contains(t, "output", out.String(), "       compiling\n")
	contains(t, "output", out.String(), "Deploy of v1 failed at build")
}

// TestCancelledDeploySaysWhoCancelledIt: the build is killed and the error
// and the release's reason name who cancelled.
func TestCancelledDeploySaysWhoCancelledIt(t *testing.T) {
	gate := t.TempDir()
	ta, w := newGitApp(t, func(cfg *testAppConfig) {
		cfg.Start = "./run"
		cfg.Build = "touch " + gate + "/building; sleep 60"
	})
	rev := w.commit("slow", map[string]string{"a": "a"})
	res := make(chan error, 1)
	go func() { res <- ta.push(w, rev, nil) }()
	waitUntil(t, "the build", func() bool { _, err := os.Stat(gate + "/building"); return err == nil })
	what, err := ta.cancel("bob")
	if err != nil || !strings.HasPrefix(what, "deploy of "+rev[:7]+" pushed by alice (since ") {
		t.Fatalf("cancel: %q %v", what, err)
	}
	err = <-res
	if err == nil || !strings.HasPrefix(err.Error(), "build: cancelled by bob: ") {
		t.Fatalf("err %v", err)
	}
	if rel, _ := ta.store.Get("v1"); rel.Status != releases.Failed || !strings.Contains(rel.Reason, "cancelled by bob") {
		t.Fatalf("v1: %+v", rel)
	}
}

// TestPushOnTopOfAMovedBranchDeploysAndOneThatUndoesItIsRefused: if the
// branch moved while a push waited, a push that contains the new head
// deploys; one that does not is refused with ErrRefMoved before any release
// is made.
func TestPushOnTopOfAMovedBranchDeploysAndOneThatUndoesItIsRefused(t *testing.T) {
	ta, w := newGitApp(t, func(cfg *testAppConfig) { cfg.Start = "./run" })
	base := w.commit("base", map[string]string{"a": "1"})
	if err := ta.push(w, base, nil); err != nil {
		t.Fatal(err)
	}
	stale := ZeroRev // what a pusher saw before base was deployed
	next := w.commit("next", map[string]string{"a": "2"})
	if err := ta.deploy(context.Background(), Push{Ref: branchRef("main"), Old: stale, New: next, Pusher: "alice"}, nil); err != nil {
		t.Fatalf("fast-forward over a moved branch: %v", err)
	}
	w.git("checkout", "-q", "-b", "side", base)
	side := w.commit("side", map[string]string{"b": "1"})
	err := ta.deploy(context.Background(), Push{Ref: branchRef("main"), Old: base, New: side, Pusher: "carol"}, nil)
	if !errors.Is(err, ErrRefMoved) {
		t.Fatalf("err %v, want ErrRefMoved", err)
	}
	if b, _ := w.bare.Resolve(branchRef("main")); b != next {
		t.Fatal("the refused push moved the branch")
	}
	if _, err := ta.store.Get("v3"); err == nil {
		t.Fatal("the refused push made a release")
	}
}

// TestDeployWithoutStartCommandFailsAtStart.
func TestDeployWithoutStartCommandFailsAtStart(t *testing.T) {
	ta, w := newGitApp(t, nil)
	for i, files := range []map[string]string{
		{"a": "no Procfile"},
		{"Procfile": "worker: ./work\n"},
	} {
		rev := w.commit("no start", files)
		if err := ta.push(w, rev, nil); !errors.Is(err, ErrNoStart) || !strings.HasPrefix(err.Error(), "start: ") {
			t.Fatalf("%d: err %v", i, err)
		}
	}
}

// TestDeployWhoseLedgerWriteFailsStaysLiveAndSaysSo: the release is live,
// so the push succeeds, but the pusher and the log hear of the lost event.
func TestDeployWhoseLedgerWriteFailsStaysLiveAndSaysSo(t *testing.T) {
	ta, w := newGitApp(t, func(cfg *testAppConfig) { cfg.Start = "./run" })
	ta.store.fail(func(s *faultyStore) { s.recordErr = errInjected })
	rev := w.commit("one", map[string]string{"a": "1"})
	var out syncBuf
	if err := ta.push(w, rev, &out); err != nil {
		t.Fatal(err)
	}
	if ta.current() != "v1" {
		t.Fatalf("current %q", ta.current())
	}
	contains(t, "output", out.String(), "v1 is live, but the ledger could not record it: injected failure")
	contains(t, "log", ta.logs.String(), `level=ERROR msg="ledger: event not recorded" app=hello event=deploy release=v1`)
}

// TestFailedReleaseWhoseFirstSaveFailsIsRecordedOnceItsTreeIsGone: with the
// disk full, marking the release failed fails until its tree is removed;
// it is then saved, so it does not stay "building".
func TestFailedReleaseWhoseFirstSaveFailsIsRecordedOnceItsTreeIsGone(t *testing.T) {
	ta, w := newGitApp(t, func(cfg *testAppConfig) {
		cfg.Start = "./run"
		cfg.Build = "exit 1"
	})
	ta.store.fail(func(s *faultyStore) {
		s.saveErr = func(r *releases.Release) error {
			if _, err := os.Stat(s.Dir(r.ID)); r.Status == releases.Failed && err == nil {
				return errors.New("no space left on device")
			}
			return nil
		}
	})
	rev := w.commit("broken", map[string]string{"a": "a"})
	var out syncBuf
	if err := ta.push(w, rev, &out); !errors.Is(err, ErrBuild) {
		t.Fatalf("err %v", err)
	}
	if ta.status("v1") != releases.Failed {
		t.Fatalf("v1 is %s", ta.status("v1"))
	}
	if strings.Contains(out.String(), "could not be marked failed") {
		t.Fatalf("output: %s", out.String())
	}
}

// TestDeployOverMaxReleaseSizeFailsAndTheNextPushDeploys: the tree's size
// is checked before it is written; the release fails with the reason, no
// tree stays, and a smaller push goes live after it.
func TestDeployOverMaxReleaseSizeFailsAndTheNextPushDeploys(t *testing.T) {
	ta, w := newGitApp(t, func(cfg *testAppConfig) { cfg.Start = "./run" })
	ta.maxRelease = 1 << 20
	big := w.commit("big", map[string]string{"big": strings.Repeat("0", 2<<20)})
	err := ta.push(w, big, nil)
	if !errors.Is(err, releases.ErrTooLarge) || !strings.Contains(err.Error(), "checkout: checkout: release too large: 2.0 MiB > max_release_size 1.0 MiB") {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Stat(ta.store.Dir("v1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the tree of v1 is still there: %v", err)
	}
	if rel, _ := ta.store.Get("v1"); rel.Status != releases.Failed || !strings.Contains(rel.Reason, "release too large") {
		t.Fatalf("v1: %+v", rel)
	}
	small := w.commit("small", map[string]string{"big": "0"})
	if err := ta.push(w, small, nil); err != nil {
		t.Fatal(err)
	}
	if ta.current() != "v2" {
		t.Fatalf("current %q", ta.current())
	}
}

// TestProcfileIsReadFromTheCommitAndASymlinkIsRefused: a Procfile committed
// as a symlink to /proc/self/fd/0 (or a FIFO) is refused at once with the
// reason, instead of the daemon blocking on reading it.
func TestProcfileIsReadFromTheCommitAndASymlinkIsRefused(t *testing.T) {
	ta, w := newGitApp(t, nil)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"/proc/self/fd/0", fifo} {
		os.Remove(filepath.Join(w.dir, "Procfile"))
		if err := os.Symlink(target, filepath.Join(w.dir, "Procfile")); err != nil {
			t.Fatal(err)
		}
		rev := w.commit("procfile link", map[string]string{"a": target})
		done := make(chan error, 1)
		go func() { done <- ta.push(w, rev, nil) }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrNoStart) || !errors.Is(err, ErrNotAFile) ||
				!strings.Contains(err.Error(), "start: no start command: Procfile: not a regular file: it is a symlink") {
				t.Fatalf("%s: err %v", target, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: the deploy blocked on the Procfile", target)
		}
	}
}
