package deployer

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestFetchBundleChecksEveryObjectAsAPush: a bundle (thin: the receiver
// holds its prerequisite) whose commit fails git's fsck (no email) is
// refused, leaves no ref, no object and no quarantine; an honest one
// with the same prerequisite is taken. git fetch from a bundle ignores
// transfer.fsckObjects, so FetchBundle checks on its own.
func TestFetchBundleChecksEveryObjectAsAPush(t *testing.T) {
	w := newGitWork(t)
	base := w.commit("base", map[string]string{"a": "a"})
	good := w.commit("good", map[string]string{"b": "b"})
	tree := w.git("rev-parse", good+"^{tree}")
	cmd := exec.Command("git", "hash-object", "-t", "commit", "--literally", "-w", "--stdin")
	cmd.Dir = w.dir
	cmd.Stdin = strings.NewReader(fmt.Sprintf("tree %s\nparent %s\nauthor mallory 1 +0000\ncommitter m <m@x> 1 +0000\n\nbad\n", tree, base))
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.TrimSpace(string(out))
	w.git("--git-dir="+w.bare.Path(), "update-ref", "-d", "refs/pushed/"+good)
	w.git("--git-dir="+w.bare.Path(), "prune") // the bare repository holds base only

	bundle := func(name, rev string) string {
		path := filepath.Join(t.TempDir(), name)
		w.git("update-ref", "refs/deployer/fleet/v2", rev)
		w.git("bundle", "create", "-q", path, "refs/deployer/fleet/v2", "^"+base)
		return path
	}
	badPath, goodPath := bundle("bad", bad), bundle("good", good)
	err = w.bare.FetchBundle(context.Background(), badPath, "refs/deployer/fleet/v2")
	if err == nil || !strings.Contains(err.Error(), "missingEmail") {
		t.Fatalf("a bundle that fails fsck: %v", err)
	}
	if _, err := w.bare.Resolve("refs/deployer/fleet/v2"); err == nil {
		t.Error("the refused bundle's ref was made")
	}
	if err := exec.Command("git", "--git-dir="+w.bare.Path(), "cat-file", "-e", bad).Run(); err == nil {
		t.Error("the refused bundle's commit is in the repository")
	}
	if q, _ := filepath.Glob(filepath.Join(w.bare.Path(), "objects", "tmp_objdir-*")); len(q) > 0 {
		t.Errorf("quarantine left: %v", q)
	}
	if err := w.bare.FetchBundle(context.Background(), goodPath, "refs/deployer/fleet/v2"); err != nil {
		t.Fatalf("an honest thin bundle: %v", err)
	}
	if got, err := w.bare.Resolve("refs/deployer/fleet/v2"); err != nil || got != good {
		t.Fatalf("after an honest bundle: %s %v", got, err)
	}
	if q, _ := filepath.Glob(filepath.Join(w.bare.Path(), "objects", "tmp_objdir-*")); len(q) > 0 {
		t.Errorf("quarantine left: %v", q)
	}
}
