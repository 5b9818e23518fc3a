package releases

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"
)

// FuzzCheckoutStaysInsideTheRelease builds a tree from fuzzed entries —
// names, modes, symlink targets, nesting — and checks that a checkout never
// creates anything outside the release directory, whatever it does inside.
// Each line of spec is "mode name target": mode d (enter a directory), u (go
// up), f (file), x (executable), l (symlink to target).
func FuzzCheckoutStaysInsideTheRelease(f *testing.F) {
	f.Add("l evil /tmp\nd evil\nf pwned x")
	f.Add("l up ../../..\nd up\nf pwned x")
	f.Add("d ..\nf pwned x")
	f.Add("f ../pwned x")
	f.Add("l a b\nl b ../outside\nd a\nf x y")
	f.Add("d a\nl b ..\nu\nd a\nd b\nf x y")
	f.Fuzz(func(t *testing.T, spec string) {
		b := treeBuilder{memory.NewStorage()}
		sorted := func(es []object.TreeEntry) []object.TreeEntry {
			key := func(e object.TreeEntry) string {
				if e.Mode == filemode.Dir {
					return e.Name + "/"
				}
				return e.Name
			}
			sort.SliceStable(es, func(i, j int) bool { return key(es[i]) < key(es[j]) })
			return es
		}
		// Build nested trees bottom-up from a stack of entry lists.
		stack := [][]object.TreeEntry{nil}
		names := []string{""}
		closeDir := func() {
			entries := stack[len(stack)-1]
			name := names[len(names)-1]
			stack, names = stack[:len(stack)-1], names[:len(names)-1]
			h := tryTree(t, b, sorted(entries))
			stack[len(stack)-1] = append(stack[len(stack)-1], object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h})
		}
		for _, line := range strings.Split(spec, "\n") {
			f := strings.SplitN(line, " ", 3)
			if len(f) < 2 || f[1] == "" || len(stack) > 8 {
				continue
			}
			target := ""
			if len(f) == 3 {
				target = f[2]
			}
			cur := &stack[len(stack)-1]
			switch f[0] {
			case "d":
				stack, names = append(stack, nil), append(names, f[1])
			case "u":
				if len(stack) > 1 {
					closeDir()
				}
			case "f":
				*cur = append(*cur, object.TreeEntry{Name: f[1], Mode: filemode.Regular, Hash: b.blob(t, target)})
			case "x":
				*cur = append(*cur, object.TreeEntry{Name: f[1], Mode: filemode.Executable, Hash: b.blob(t, target)})
			case "l":
				*cur = append(*cur, object.TreeEntry{Name: f[1], Mode: filemode.Symlink, Hash: b.blob(t, target)})
			}
		}
		for len(stack) > 1 {
			closeDir()
		}
		var root plumbing.Hash = tryTree(t, b, sorted(stack[0]))

		base := t.TempDir()
		outside := filepath.Join(base, "outside")
		release := filepath.Join(base, "app", "releases", "v1")
		if err := os.MkdirAll(outside, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(release, 0o755); err != nil {
			t.Fatal(err)
		}
		err := Checkout(context.Background(), StorerObjects(b.st), root, release, 0)
		if err != nil && !errors.Is(err, ErrUnsafePath) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		// Nothing may appear anywhere but inside the release.
		filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err != nil || p == base {
				return nil
			}
			if p == release || strings.HasPrefix(p, release+"/") {
				return nil
			}
			switch p {
			case outside, filepath.Join(base, "app"), filepath.Join(base, "app", "releases"):
				return nil
			}
			t.Fatalf("checkout wrote %s outside the release", p)
			return nil
		})
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Fatalf("checkout wrote into a sibling directory: %v", entries)
		}
	})
}

// tryTree stores a tree, skipping inputs go-git cannot encode at all (a NUL
// in a name): git could not have sent them either.
func tryTree(t *testing.T, b treeBuilder, entries []object.TreeEntry) plumbing.Hash {
	o := b.st.NewEncodedObject()
	if err := (&object.Tree{Entries: entries}).Encode(o); err != nil {
		t.Skip(err)
	}
	h, err := b.st.SetEncodedObject(o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
