package releases

import (
	"errors"
	"os"
	"path/filepath"
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
	if err := Checkout(b.st, root, dir); err != nil {
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
			err := Checkout(b.st, h, dir)
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
