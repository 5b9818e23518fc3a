package deployer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/deployer/deployer/releases"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// ZeroRev is git's all-zero object name: "no such ref".
const ZeroRev = "0000000000000000000000000000000000000000"

// Repo is an app's bare repository. git itself carries the wire and moves
// refs (its locking is what receive-pack honours); go-git reads objects.
type Repo struct {
	path string
}

// InitRepo creates the bare repository at path unless it exists.
func InitRepo(path, branch string) (*Repo, error) {
	if _, err := os.Stat(filepath.Join(path, "HEAD")); err != nil {
		out, err := exec.Command("git", "init", "--quiet", "--bare", "--initial-branch="+branch, path).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("init repo: %w: %s", err, bytes.TrimSpace(out))
		}
	}
	// The daemon's alone: no app's code may read another's history.
	if err := os.Chmod(path, 0o700); err != nil {
		return nil, fmt.Errorf("init repo: %w", err)
	}
	return &Repo{path: path}, nil
}

// Path is the repository directory.
func (r *Repo) Path() string { return r.path }

// go-git reads commits and refs; a checkout's trees and blobs come through
// git cat-file (catFile). Should go-git meet a large object all the same,
// objects larger than largeObject are not read into memory whole: go-git
// hands out a reader that inflates them as it is read. The cache of
// decoded objects is kept small for the same reason.
const (
	largeObject = 512 << 10
	objectCache = 8 * cache.MiByte
)

func (r *Repo) open() (*git.Repository, error) {
	st := filesystem.NewStorageWithOptions(osfs.New(r.path), cache.NewObjectLRU(objectCache),
		filesystem.Options{LargeObjectThreshold: largeObject})
	repo, err := git.Open(st, nil)
	if err != nil {
		return nil, fmt.Errorf("open repo: %w", err)
	}
	return repo, nil
}

// Commit is what a deploy needs of a commit.
type Commit struct {
	Hash    string
	Tree    string // the hash of its tree, for Checkout
	Subject string // the first line of its message
}

// Commit reads commit rev.
func (r *Repo) Commit(rev string) (Commit, error) {
	repo, err := r.open()
	if err != nil {
		return Commit{}, err
	}
	c, err := repo.CommitObject(plumbing.NewHash(rev))
	if err != nil {
		return Commit{}, fmt.Errorf("read commit %s: %w", short(rev), err)
	}
	subject, _, _ := strings.Cut(strings.TrimSpace(c.Message), "\n")
	return Commit{Hash: c.Hash.String(), Tree: c.TreeHash.String(), Subject: subject}, nil
}

// Checkout writes the files of tree into dir, streaming each blob from git
// (see catFile), and fails with releases.ErrTooLarge if they add up to more
// than limit bytes (see releases.Checkout).
func (r *Repo) Checkout(ctx context.Context, tree, dir string, limit int64) error {
	objects, err := openCatFile(ctx, r.path)
	if err != nil {
		return err
	}
	defer objects.Close()
	return releases.Checkout(ctx, objects, plumbing.NewHash(tree), dir, limit)
}

// File reads the regular file name (at the root of tree) from its blob,
// never through a checkout: a pushed symlink to a FIFO or /proc/self/fd/0
// cannot make the daemon block. A symlink, directory or submodule there
// fails with ErrNotAFile, a blob of more than limit bytes with
// releases.ErrTooLarge, no such name with fs.ErrNotExist.
func (r *Repo) File(tree, name string, limit int64) ([]byte, error) {
	objects, err := openCatFile(context.Background(), r.path)
	if err != nil {
		return nil, err
	}
	defer objects.Close()
	t, err := objects.Tree(plumbing.NewHash(tree))
	if err != nil {
		return nil, fmt.Errorf("read tree %s: %w", short(tree), err)
	}
	for _, e := range t.Entries {
		if e.Name != name {
			continue
		}
		if e.Mode != filemode.Regular && e.Mode != filemode.Executable {
			return nil, fmt.Errorf("%s: %w: it is a %s", name, ErrNotAFile, modeName(e.Mode))
		}
		size, err := objects.Size(e.Hash)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		if size > limit {
			return nil, fmt.Errorf("%s: %w: %d bytes > %d", name, releases.ErrTooLarge, size, limit)
		}
		rd, err := objects.Blob(e.Hash)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		defer rd.Close()
		b, err := io.ReadAll(rd)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("read %s: %w", name, fs.ErrNotExist)
}

func modeName(m filemode.FileMode) string {
	switch m {
	case filemode.Symlink:
		return "symlink"
	case filemode.Dir:
		return "directory"
	case filemode.Submodule:
		return "submodule"
	}
	return m.String()
}

// ResolveRevision turns a branch, tag or (short) commit id into a commit id.
func (r *Repo) ResolveRevision(rev string) (string, error) {
	repo, err := r.open()
	if err != nil {
		return "", err
	}
	h, err := repo.ResolveRevision(plumbing.Revision(rev))
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", rev, err)
	}
	return h.String(), nil
}

// Resolve returns the revision a ref names.
func (r *Repo) Resolve(ref string) (string, error) {
	repo, err := r.open()
	if err != nil {
		return "", err
	}
	h, err := repo.Reference(plumbing.ReferenceName(ref), true)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", ref, err)
	}
	return h.Hash().String(), nil
}

// UpdateRef moves ref from old to rev atomically, failing with ErrRefMoved
// if it no longer names old (ZeroRev: must not exist). It uses git's own
// ref locking, the same receive-pack honours.
func (r *Repo) UpdateRef(ctx context.Context, ref, rev, old, reason string) error {
	if old == ZeroRev {
		old = ""
	}
	cmd := exec.CommandContext(ctx, "git", "--git-dir="+r.path, "update-ref", "-m", reason, ref, rev, old)
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if now, rerr := r.Resolve(ref); (rerr == nil && now != old) || (rerr != nil && old != "") {
			return fmt.Errorf("%w: %s", ErrRefMoved, msg)
		}
		return fmt.Errorf("update %s: %w: %s", ref, err, msg)
	}
	return nil
}

// IsAncestor reports whether commit a is an ancestor of (or equal to) b.
func (r *Repo) IsAncestor(a, b string) (bool, error) {
	if a == b {
		return true, nil
	}
	repo, err := r.open()
	if err != nil {
		return false, err
	}
	cb, err := repo.CommitObject(plumbing.NewHash(b))
	if err != nil {
		return false, fmt.Errorf("read commit %s: %w", short(b), err)
	}
	ca, err := repo.CommitObject(plumbing.NewHash(a))
	if err != nil {
		return false, fmt.Errorf("read commit %s: %w", short(a), err)
	}
	return ca.IsAncestor(cb)
}

// StaleQuarantine is how long a push's quarantine may go unwritten before
// a sweep takes it for the leftover of a receive-pack that died without
// cleaning up (SIGKILL, a crash of the machine). A live push writes to it
// continuously, and the transports time a stalled one out long before.
const StaleQuarantine = 5 * time.Minute

// SweepQuarantines removes the quarantine directories in which receive-pack
// keeps a push's objects until it accepts them (objects/tmp_objdir-*) when
// nothing was written to them for age. It returns the ones it removed.
func (r *Repo) SweepQuarantines(age time.Duration) ([]string, error) {
	var found []string
	for _, pattern := range []string{"tmp_objdir-*", "incoming-*"} { // git ≥ 2.32, and before
		m, err := filepath.Glob(filepath.Join(r.path, "objects", pattern))
		if err != nil {
			return nil, err
		}
		found = append(found, m...)
	}
	cutoff := time.Now().Add(-age)
	var removed []string
	var errs []error
	for _, dir := range found {
		if lastWrite(dir).After(cutoff) {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("sweep quarantine: %w", err))
			continue
		}
		removed = append(removed, filepath.Base(dir))
	}
	return removed, errors.Join(errs...)
}

// lastWrite is the newest modification time of dir and what it holds.
func lastWrite(dir string) time.Time {
	var t time.Time
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil && info.ModTime().After(t) {
			t = info.ModTime()
		}
		return nil
	})
	return t
}

// branchRef is the full name of branch.
func branchRef(branch string) string { return "refs/heads/" + branch }

// head is the revision ref names, ZeroRev if it does not exist (or cannot
// be read: the compare-and-swap that follows then fails safely).
func head(r repository, ref string) string {
	rev, err := r.Resolve(ref)
	if err != nil {
		return ZeroRev
	}
	return rev
}

// git runs git on the repository with none of the daemon's GIT_ variables.
func (r *Repo) git(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "git", append([]string{"--git-dir=" + r.path}, args...)...)
	cmd.Env = CommandEnv("GIT_")
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %w: %s", args[0], err, strings.TrimSpace(string(out)))
	}
	return nil
}

// SetRef makes ref name rev, whatever it named.
func (r *Repo) SetRef(ctx context.Context, ref, rev string) error {
	return r.git(ctx, "update-ref", "-m", "deployer: fleet shipment", ref, rev)
}

// DeleteRef removes ref if it exists.
func (r *Repo) DeleteRef(ctx context.Context, ref string) error {
	if _, err := r.Resolve(ref); err != nil {
		return nil
	}
	return r.git(ctx, "update-ref", "-d", ref)
}

// Bundle writes to path a git bundle of ref and its history, without the
// history of the commits in have (which the receiver holds: they become
// the bundle's prerequisites).
func (r *Repo) Bundle(ctx context.Context, path, ref string, have []string) error {
	args := []string{"bundle", "create", "--quiet", path, ref}
	for _, h := range have {
		args = append(args, "^"+h)
	}
	return r.git(ctx, args...)
}

// FetchBundle takes ref, and the objects it needs, from the bundle at
// path, checking every object as a push is checked (transfer.fsckObjects).
func (r *Repo) FetchBundle(ctx context.Context, path, ref string) error {
	if err := r.git(ctx, "bundle", "verify", "--quiet", path); err != nil {
		return err
	}
	if err := r.checkBundle(ctx, path); err != nil {
		return err
	}
	return r.git(ctx, "-c", "transfer.fsckObjects=true", "fetch", "--quiet", "--no-write-fetch-head", "--no-tags", path, "+"+ref+":"+ref)
}

// checkBundle runs the pack of the bundle at path through git's strict
// checks (fsck of every object, as transfer.fsckObjects checks a push) in
// a quarantine of its own, removed after: git fetch from a bundle checks
// nothing, whatever fetch.fsckObjects says (git 2.39). A quarantine a
// crash left is swept as a push's is (tmp_objdir-*).
func (r *Repo) checkBundle(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	for { // the header: signature, capabilities, prerequisites, refs, then a blank line
		line, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("bundle header: %w", err)
		}
		if line == "\n" {
			break
		}
	}
	q, err := os.MkdirTemp(filepath.Join(r.path, "objects"), "tmp_objdir-bundle-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(q)
	if err := os.Mkdir(filepath.Join(q, "pack"), 0o700); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "git", "--git-dir="+r.path, "index-pack", "--stdin", "--fix-thin", "--strict")
	cmd.Env = append(CommandEnv("GIT_"), "GIT_OBJECT_DIRECTORY="+q,
		"GIT_ALTERNATE_OBJECT_DIRECTORIES="+filepath.Join(r.path, "objects"))
	cmd.Stdin = br
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := strings.TrimSpace(string(out))
		if i := strings.LastIndex(msg, "error: "); i >= 0 { // the object at fault, without index-pack's progress
			msg = msg[i:]
		}
		return fmt.Errorf("the bundle's objects fail git's checks: %w: %s", err, strings.ReplaceAll(msg, "\n", "; "))
	}
	return nil
}
