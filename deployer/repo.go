package deployer

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
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
	if _, err := os.Stat(path); err == nil {
		return &Repo{path: path}, nil
	}
	out, err := exec.Command("git", "init", "--quiet", "--bare", "--initial-branch="+branch, path).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("init repo: %w: %s", err, bytes.TrimSpace(out))
	}
	return &Repo{path: path}, nil
}

// Path is the repository directory.
func (r *Repo) Path() string { return r.path }

func (r *Repo) open() (*git.Repository, error) {
	repo, err := git.PlainOpen(r.path)
	if err != nil {
		return nil, fmt.Errorf("open repo: %w", err)
	}
	return repo, nil
}

// Commit reads a commit.
func (r *Repo) Commit(rev string) (*git.Repository, *object.Commit, error) {
	repo, err := r.open()
	if err != nil {
		return nil, nil, err
	}
	c, err := repo.CommitObject(plumbing.NewHash(rev))
	if err != nil {
		return nil, nil, fmt.Errorf("read commit %s: %w", short(rev), err)
	}
	return repo, c, nil
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

// subject is the first line of a commit message.
func subject(c *object.Commit) string {
	s, _, _ := strings.Cut(strings.TrimSpace(c.Message), "\n")
	return s
}

// IsAncestor reports whether commit a is an ancestor of (or equal to) b.
func (r *Repo) IsAncestor(a, b string) (bool, error) {
	if a == b {
		return true, nil
	}
	repo, cb, err := r.Commit(b)
	if err != nil {
		return false, err
	}
	ca, err := repo.CommitObject(plumbing.NewHash(a))
	if err != nil {
		return false, fmt.Errorf("read commit %s: %w", short(a), err)
	}
	return ca.IsAncestor(cb)
}
