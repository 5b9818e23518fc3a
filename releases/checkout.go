package releases

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// MaxEntries bounds the number of files, directories and links in one
// checkout. Trees share subtrees by hash, so a push of a few kilobytes can
// name billions of empty files; no real app comes near this.
const MaxEntries = 1 << 20

// Checkout writes the files of tree into dir, which must exist and be empty.
// File modes and symlinks are as in git; submodules are skipped. A path with
// "..", ".git" or an absolute form fails the checkout with ErrUnsafePath, and
// every write goes through an os.Root, so a symlink the tree created cannot
// redirect a later write outside dir.
//
// Its cost is bounded. The sizes of the tree's blobs are summed from the
// object headers before anything is written: more than limit bytes (limit
// > 0), or more than MaxEntries entries, fails with ErrTooLarge. Each blob is
// copied to its file as a stream, so memory does not grow with the size of a
// file as long as objects streams blobs (see Objects). It
// stops when ctx ends. On an error dir holds part of the tree: the caller
// removes it.
func Checkout(ctx context.Context, objects Objects, tree plumbing.Hash, dir string, limit int64) error {
	m := &measure{objects: objects, ctx: ctx}
	if err := m.tree(tree, ""); err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	if limit > 0 && m.bytes > limit {
		return fmt.Errorf("checkout: %w: %s > max_release_size %s",
			ErrTooLarge, humanize.IBytes(uint64(m.bytes)), humanize.IBytes(uint64(limit)))
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	defer root.Close()
	w := &writer{objects: objects, ctx: ctx, root: root, left: m.bytes}
	if err := w.tree(tree, ""); err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	return nil
}

// measure sums the sizes of a tree's blobs and counts its entries without
// reading any blob.
type measure struct {
	objects Objects
	ctx     context.Context
	bytes   int64
	entries int
}

func (m *measure) tree(h plumbing.Hash, prefix string) error {
	if err := m.ctx.Err(); err != nil {
		return err
	}
	t, err := m.objects.Tree(h)
	if err != nil {
		return fmt.Errorf("read tree %s: %w", prefix, err)
	}
	for _, e := range t.Entries {
		if m.entries++; m.entries > MaxEntries {
			return fmt.Errorf("%w: more than %d files", ErrTooLarge, MaxEntries)
		}
		name := path.Join(prefix, e.Name)
		switch e.Mode {
		case filemode.Dir:
			if err := m.tree(e.Hash, name); err != nil {
				return err
			}
		case filemode.Submodule:
		default:
			size, err := m.objects.Size(e.Hash)
			if err != nil {
				return fmt.Errorf("read %s: %w", name, err)
			}
			m.bytes += size
		}
	}
	return nil
}

// writer writes a measured tree; left is what the measure allowed, so that
// an object whose content outgrows its header cannot pass the limit either.
type writer struct {
	objects Objects
	ctx     context.Context
	root    *os.Root
	left    int64
}

// tree walks the tree itself, rather than with go-git's walker, so that
// every name is checked here and a bad one is reported as ErrUnsafePath.
func (w *writer) tree(h plumbing.Hash, prefix string) error {
	t, err := w.objects.Tree(h)
	if err != nil {
		return fmt.Errorf("read tree %s: %w", prefix, err)
	}
	for _, e := range t.Entries {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		name := path.Join(prefix, e.Name)
		if err := checkPath(e.Name, name); err != nil {
			return err
		}
		switch e.Mode {
		case filemode.Dir:
			if err := w.root.Mkdir(name, 0o755); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrUnsafePath, name, err)
			}
			if err := w.tree(e.Hash, name); err != nil {
				return err
			}
		case filemode.Submodule:
			// Not checked out, as git does without --recurse-submodules.
		default:
			if err := w.entry(name, e); err != nil {
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

func (w *writer) entry(name string, e object.TreeEntry) error {
	r, err := w.objects.Blob(e.Hash)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	defer r.Close()
	if e.Mode == filemode.Symlink {
		target, err := io.ReadAll(io.LimitReader(r, 4096))
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if err := w.root.Symlink(string(target), name); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrUnsafePath, name, err)
		}
		return nil
	}
	perm := os.FileMode(0o644)
	if e.Mode == filemode.Executable {
		perm = 0o755
	}
	f, err := w.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s appears twice", ErrUnsafePath, name)
		}
		return fmt.Errorf("%w: %s: %w", ErrUnsafePath, name, err)
	}
	// One byte past what is left tells an outgrown object from one that
	// fits exactly.
	n, err := io.Copy(f, io.LimitReader(ctxReader{w.ctx, r}, w.left+1))
	if err == nil && n > w.left {
		err = fmt.Errorf("%w: %s is larger than its object header says", ErrTooLarge, name)
	}
	w.left -= n
	if err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
