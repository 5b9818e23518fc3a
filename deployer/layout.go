package deployer

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/deployer/deployer/internal/account"
	"github.com/deployer/deployer/releases"
)

// prepareAccount readies the app directory for the user its processes run
// as (apps.APP.user): that user can walk down to its release trees and owns
// shared/, and nothing else of the daemon's is open to it (releases.Open set
// the modes). The data dir and apps/ are opened for walking through (o+x,
// never listing) only when such a user exists; a data dir that user cannot
// reach at all is an error naming the directory in the way.
//
// An app that names no user while the daemon is root runs as root: it is
// allowed, and said in the log at every start.
func prepareAccount(dataDir, appDir string, acct *account.Account, log *slog.Logger) error {
	if acct == nil {
		if os.Geteuid() == 0 {
			log.Warn("the app's build, hooks and workers run as root: set apps." + filepath.Base(appDir) + ".user to a user of its own")
		}
		return os.Lchown(filepath.Join(appDir, "shared"), os.Geteuid(), os.Getegid())
	}
	if !acct.Root() {
		for _, d := range []string{dataDir, filepath.Join(dataDir, "apps")} {
			fi, err := os.Stat(d)
			if err != nil {
				return err
			}
			if fi.Mode().Perm()&0o001 == 0 {
				if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
					return err
				}
			}
		}
	}
	if err := giveShared(filepath.Join(appDir, "shared"), acct); err != nil {
		return err
	}
	if err := acct.Reach(filepath.Join(appDir, "releases")); err != nil {
		return err
	}
	log.Info("the app's build, hooks and workers run as " + acct.String())
	return nil
}

// giveShared gives shared/ and what it holds to acct when it is not
// acct's yet (the app's user is new, or changed): the same walk as a
// release tree's, so files the app ran as root with, or an .env the
// operator put there, are readable by the app's user.
func giveShared(dir string, acct *account.Account) error {
	if acct.OwnedBy(dir) {
		return nil
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	from := fi.Sys().(*syscall.Stat_t).Uid
	if err := os.Lchown(dir, os.Geteuid(), os.Getegid()); err != nil {
		return err
	}
	if err := acct.ChownTree(dir, from); err != nil {
		return fmt.Errorf("shared: %w", err)
	}
	return nil
}

// giveTree hands rel's tree to the app's user if it is not already its:
// after a build, or before a release built for another user goes live
// again (the app's user changed).
//
// An app that names no user any more, under a root daemon, gets its trees
// taken back by root: root's processes must not run code that the previous
// user (or another app that runs as that user) can still change.
func (j *job) giveTree(rel *releases.Release) error {
	dir := j.store.Dir(rel.ID)
	to, mode := j.acct, os.FileMode(0o750)
	if to == nil {
		if os.Geteuid() != 0 {
			return nil // a daemon that is not root only ever made its own trees
		}
		to, mode = &account.Account{User: "root", UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}, 0o700
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("release %s: %w", rel.ID, err)
	}
	if to.OwnedBy(dir) {
		return nil
	}
	from := fi.Sys().(*syscall.Stat_t).Uid
	// Take it back first: nothing of a previous owner may work in the
	// tree while it changes hands (the walk cannot be led outside it
	// either way: it runs inside an os.Root).
	if err := os.Lchown(dir, os.Geteuid(), os.Getegid()); err != nil {
		return fmt.Errorf("release %s: %w", rel.ID, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("release %s: %w", rel.ID, err)
	}
	if err := to.ChownTree(dir, from); err != nil {
		return fmt.Errorf("release %s: %w", rel.ID, err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		return fmt.Errorf("release %s: %w", rel.ID, err)
	}
	return nil
}

// mkShared makes rel (a path under shared/, a directory if dir) and its
// missing parents inside an os.Root of shared/, owned by the app's user: a
// symlink the app left in shared/ cannot lead the daemon outside it.
func (j *job) mkShared(rel string, dir bool) error {
	root, err := os.OpenRoot(filepath.Join(j.dir, "shared"))
	if err != nil {
		return err
	}
	defer root.Close()
	// Chowned through the descriptor just made, never by name again: the
	// app's user may swap the name for something else meanwhile.
	own := func(made *os.File) error {
		defer made.Close()
		if j.acct == nil {
			return nil
		}
		return made.Chown(int(j.acct.UID), int(j.acct.GID))
	}
	mkdir := func(p string) error {
		if err := root.Mkdir(p, 0o755); err != nil {
			return err
		}
		f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		return own(f)
	}
	cur := ""
	for _, p := range splitPath(filepath.Dir(rel)) {
		cur = filepath.Join(cur, p)
		if err := mkdir(cur); err != nil && !os.IsExist(err) {
			return err
		}
	}
	if dir {
		return mkdir(rel)
	}
	f, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	return own(f)
}

// splitPath is the names of a clean relative path, none for ".".
func splitPath(p string) []string {
	if p == "." || p == "" {
		return nil
	}
	var out []string
	for p != "." && p != "/" {
		out = append([]string{filepath.Base(p)}, out...)
		p = filepath.Dir(p)
	}
	return out
}
