package releases

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// Checkout writes the files of tree into dir, which must exist and be empty.
// File modes and symlinks are as in git; submodules are skipped. A path with
// "..", ".git" or an absolute form fails the checkout with ErrUnsafePath, and
// every write goes through an os.Root, so a symlink the tree created cannot
// redirect a later write outside dir.
func Checkout(objects storer.EncodedObjectStorer, tree plumbing.Hash, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	defer root.Close()
	if err := checkoutTree(objects, root, tree, ""); err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	return nil
}

// checkoutTree walks the tree itself, rather than with go-git's walker, so
// that every name is checked here and a bad one is reported as ErrUnsafePath.
func checkoutTree(objects storer.EncodedObjectStorer, root *os.Root, h plumbing.Hash, prefix string) error {
	t, err := object.GetTree(objects, h)
	if err != nil {
		return fmt.Errorf("read tree %s: %w", prefix, err)
	}
	for _, e := range t.Entries {
		name := path.Join(prefix, e.Name)
		if err := checkPath(e.Name, name); err != nil {
			return err
		}
		switch e.Mode {
		case filemode.Dir:
			if err := root.Mkdir(name, 0o755); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrUnsafePath, name, err)
			}
			if err := checkoutTree(objects, root, e.Hash, name); err != nil {
				return err
			}
		case filemode.Submodule:
			// Not checked out, as git does without --recurse-submodules.
		default:
			if err := writeEntry(objects, root, name, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkPath refuses an entry name that is not a single plain component.
func checkPath(entry, name string) error {
	if entry == "" || entry == "." || entry == ".." || strings.EqualFold(entry, ".git") ||
		strings.ContainsAny(entry, "/\x00") {
		return fmt.Errorf("%w: %q", ErrUnsafePath, name)
	}
	return nil
}

func writeEntry(objects storer.EncodedObjectStorer, root *os.Root, name string, e object.TreeEntry) error {
	blob, err := object.GetBlob(objects, e.Hash)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	r, err := blob.Reader()
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	defer r.Close()
	if e.Mode == filemode.Symlink {
		target, err := io.ReadAll(io.LimitReader(r, 4096))
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if err := root.Symlink(string(target), name); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrUnsafePath, name, err)
		}
		return nil
	}
	perm := os.FileMode(0o644)
	if e.Mode == filemode.Executable {
		perm = 0o755
	}
	w, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s appears twice", ErrUnsafePath, name)
		}
		return fmt.Errorf("%w: %s: %w", ErrUnsafePath, name, err)
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	return w.Close()
}
