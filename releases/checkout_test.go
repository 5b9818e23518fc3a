package releases

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"
)

// treeBuilder writes crafted objects, including ones the git client would
// refuse to create, straight into an object store.
type treeBuilder struct{ st *memory.Storage }

func (b treeBuilder) blob(t *testing.T, content string) plumbing.Hash {
	t.Helper()
	o := b.st.NewEncodedObject()
	o.SetType(plumbing.BlobObject)
	w, _ := o.Writer()
	w.Write([]byte(content))
	w.Close()
	h, err := b.st.SetEncodedObject(o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (b treeBuilder) tree(t *testing.T, entries ...object.TreeEntry) plumbing.Hash {
	t.Helper()
	o := b.st.NewEncodedObject()
	if err := (&object.Tree{Entries: entries}).Encode(o); err != nil {
		t.Fatal(err)
	}
	h, err := b.st.SetEncodedObject(o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestCheckoutKeepsModesAndSymlinks(t *testing.T) {
	b := treeBuilder{memory.NewStorage()}
	sub := b.tree(t, object.TreeEntry{Name: "run.sh", Mode: filemode.Executable, Hash: b.blob(t, "#!/bin/sh\n")})
	root := b.tree(t,
		object.TreeEntry{Name: "README", Mode: filemode.Regular, Hash: b.blob(t, "hi\n")},
		object.TreeEntry{Name: "bin", Mode: filemode.Dir, Hash: sub},
		object.TreeEntry{Name: "link", Mode: filemode.Symlink, Hash: b.blob(t, "bin/run.sh")},
	)
	dir := t.TempDir()
	if err := Checkout(context.Background(), StorerObjects(b.st), root, dir, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "README")); string(got) != "hi\n" {
		t.Fatalf("README = %q", got)
	}
	st, err := os.Stat(filepath.Join(dir, "bin/run.sh"))
	if err != nil || st.Mode().Perm()&0o100 == 0 {
		t.Fatalf("run.sh not executable: %v %v", st, err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "link")); err != nil || target != "bin/run.sh" {
		t.Fatalf("link = %q, %v", target, err)
	}
}

// TestCheckoutCannotWriteOutsideRelease crafts trees that try to escape the
// release directory: a symlink to an outside directory followed by a file
// beneath the same name, a relative symlink climbing out, and ".." and
// ".git" entries. Each must fail with ErrUnsafePath and leave the outside
// directory empty.
func TestCheckoutCannotWriteOutsideRelease(t *testing.T) {
	outside := t.TempDir()
	b := treeBuilder{memory.NewStorage()}
	payload := b.blob(t, "pwned\n")
	inner := b.tree(t, object.TreeEntry{Name: "pwned", Mode: filemode.Regular, Hash: payload})
	cases := map[string]plumbing.Hash{
		"absolute symlink then file beneath it": b.tree(t,
			object.TreeEntry{Name: "evil", Mode: filemode.Symlink, Hash: b.blob(t, outside)},
			object.TreeEntry{Name: "evil", Mode: filemode.Dir, Hash: inner},
		),
		"relative symlink climbing out": b.tree(t,
			object.TreeEntry{Name: "up", Mode: filemode.Symlink, Hash: b.blob(t, "../../../../../../../.."+outside)},
			object.TreeEntry{Name: "up", Mode: filemode.Dir, Hash: inner},
		),
		"dot-dot entry": b.tree(t,
			object.TreeEntry{Name: "..", Mode: filemode.Dir, Hash: inner},
		),
		"slash in entry name": b.tree(t,
			object.TreeEntry{Name: "../../../../../../.." + outside + "/pwned", Mode: filemode.Regular, Hash: payload},
		),
		".git entry": b.tree(t,
			object.TreeEntry{Name: ".GIT", Mode: filemode.Dir, Hash: b.tree(t, object.TreeEntry{Name: "config", Mode: filemode.Regular, Hash: payload})},
		),
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "releases", "v1")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			err := Checkout(context.Background(), StorerObjects(b.st), h, dir, 0)
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("err = %v, want ErrUnsafePath", err)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Fatalf("wrote outside the release: %v", entries)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "pwned")); err == nil {
				t.Fatal("wrote into the releases directory")
			}
		})
	}
}

// TestCheckoutRefusesATreeOverTheLimitBeforeWritingIt: the sizes add up
// from the object headers, so nothing of an oversized tree reaches the disk.
func TestCheckoutRefusesATreeOverTheLimitBeforeWritingIt(t *testing.T) {
	b := treeBuilder{memory.NewStorage()}
	sub := b.tree(t, object.TreeEntry{Name: "b", Mode: filemode.Regular, Hash: b.blob(t, strings.Repeat("x", 600))})
	root := b.tree(t,
		object.TreeEntry{Name: "a", Mode: filemode.Regular, Hash: b.blob(t, strings.Repeat("y", 500))},
		object.TreeEntry{Name: "d", Mode: filemode.Dir, Hash: sub},
	)
	dir := t.TempDir()
	err := Checkout(context.Background(), StorerObjects(b.st), root, dir, 1000)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "release too large: 1.1 KiB > max_release_size 1000 B") {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("wrote %v", entries)
	}
	if err := Checkout(context.Background(), StorerObjects(b.st), root, t.TempDir(), 1100); err != nil {
		t.Fatalf("a tree of exactly the limit: %v", err)
	}
}

// TestCheckoutRefusesATreeOfSharedSubtreesNamingMillionsOfFiles: a few
// kilobytes of trees that reuse one subtree name more entries than
// MaxEntries; the checkout counts them and refuses before writing.
func TestCheckoutRefusesATreeOfSharedSubtreesNamingMillionsOfFiles(t *testing.T) {
	b := treeBuilder{memory.NewStorage()}
	empty := b.blob(t, "")
	var leaves []object.TreeEntry
	for i := range 1024 {
		leaves = append(leaves, object.TreeEntry{Name: fmt.Sprintf("f%04d", i), Mode: filemode.Regular, Hash: empty})
	}
	sub := b.tree(t, leaves...)
	var dirs []object.TreeEntry
	for i := range 1024 {
		dirs = append(dirs, object.TreeEntry{Name: fmt.Sprintf("d%04d", i), Mode: filemode.Dir, Hash: sub})
	}
	dir := t.TempDir()
	err := Checkout(context.Background(), StorerObjects(b.st), b.tree(t, dirs...), dir, 1<<30)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("wrote %d entries", len(entries))
	}
}

// TestCheckoutStopsWhenItsContextEnds.
func TestCheckoutStopsWhenItsContextEnds(t *testing.T) {
	b := treeBuilder{memory.NewStorage()}
	root := b.tree(t, object.TreeEntry{Name: "a", Mode: filemode.Regular, Hash: b.blob(t, "a")})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Checkout(ctx, StorerObjects(b.st), root, t.TempDir(), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
