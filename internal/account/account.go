package account

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// ErrCannotSwitch means the daemon lacks the privilege to run processes as
// another user.
var ErrCannotSwitch = errors.New("the daemon is not root and cannot run processes as another user")

// GroupError is an error in the group (apps.APP.group) rather than the user.
type GroupError struct{ Err error }

func (e *GroupError) Error() string { return e.Err.Error() }
func (e *GroupError) Unwrap() error { return e.Err }

// Account is a Unix user and group to run processes as.
type Account struct {
	User   string
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups, the primary included
	Home   string
}

// Lookup resolves userName (a name or a numeric uid) and optional groupName
// (default: the user's primary group). An empty userName, or a user and
// group that are the daemon's own, give nil: run as the daemon.
func Lookup(userName, groupName string) (*Account, error) {
	if userName == "" {
		if groupName != "" {
			return nil, &GroupError{fmt.Errorf("group %q without a user", groupName)}
		}
		return nil, nil
	}
	u, err := user.Lookup(userName)
	if err != nil {
		var unknown user.UnknownUserError
		if _, nerr := strconv.Atoi(userName); nerr == nil {
			u, err = user.LookupId(userName)
		}
		if err != nil {
			if errors.As(err, &unknown) || errors.As(err, new(user.UnknownUserIdError)) {
				return nil, fmt.Errorf("no such user %q", userName)
			}
			return nil, fmt.Errorf("user %q: %w", userName, err)
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: uid %q: %w", userName, u.Uid, err)
	}
	gidStr := u.Gid
	if groupName != "" {
		g, err := user.LookupGroup(groupName)
		if err != nil {
			if _, nerr := strconv.Atoi(groupName); nerr == nil {
				g, err = user.LookupGroupId(groupName)
			}
		}
		if err != nil {
			return nil, &GroupError{fmt.Errorf("no such group %q", groupName)}
		}
		gidStr = g.Gid
	}
	gid, err := strconv.ParseUint(gidStr, 10, 32)
	if err != nil {
		return nil, &GroupError{fmt.Errorf("group %q: gid %q: %w", groupName, gidStr, err)}
	}
	a := &Account{User: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	a.Groups = []uint32{a.GID}
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if n, err := strconv.ParseUint(s, 10, 32); err == nil && !slices.Contains(a.Groups, uint32(n)) {
				a.Groups = append(a.Groups, uint32(n))
			}
		}
	}
	if os.Geteuid() != 0 {
		if int(a.UID) == os.Geteuid() && int(a.GID) == os.Getegid() {
			return nil, nil
		}
		if int(a.UID) == os.Geteuid() && groupName != "" {
			return nil, &GroupError{fmt.Errorf("run as group %s (gid %d): %w", groupName, a.GID, ErrCannotSwitch)}
		}
		return nil, fmt.Errorf("run as %s (uid %d): %w", a.User, a.UID, ErrCannotSwitch)
	}
	return a, nil
}

// String names the account for logs: "hello (uid 1001, gid 1001)".
func (a *Account) String() string {
	if a == nil {
		return fmt.Sprintf("the daemon's user (uid %d)", os.Geteuid())
	}
	return fmt.Sprintf("%s (uid %d, gid %d)", a.User, a.UID, a.GID)
}

// Root reports whether processes run as root: the daemon's own user when it
// is root, or an account of uid 0.
func (a *Account) Root() bool {
	if a == nil {
		return os.Geteuid() == 0
	}
	return a.UID == 0
}

// Credential is the SysProcAttr.Credential that runs a process as the
// account; nil runs it as the daemon.
func (a *Account) Credential() *syscall.Credential {
	if a == nil {
		return nil
	}
	return &syscall.Credential{Uid: a.UID, Gid: a.GID, Groups: slices.Clone(a.Groups)}
}

// Env is env with HOME, USER and LOGNAME set for the account (unchanged for
// nil). The daemon's own values would point a build at root's home.
func (a *Account) Env(env []string) []string {
	if a == nil {
		return env
	}
	set := map[string]string{"HOME": a.Home, "USER": a.User, "LOGNAME": a.User}
	out := slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		_, ok := set[k]
		return ok
	})
	for _, k := range []string{"HOME", "USER", "LOGNAME"} {
		out = append(out, k+"="+set[k])
	}
	return out
}

// Owns makes path (not following a symlink) the account's.
func (a *Account) Owns(path string) error {
	if a == nil {
		return nil
	}
	if err := os.Lchown(path, int(a.UID), int(a.GID)); err != nil {
		return fmt.Errorf("give %s to %s: %w", path, a.User, err)
	}
	return nil
}

// ChownTree gives the tree at dir to the account, the top last, never
// following a symlink and never leaving the tree: every step resolves
// inside an os.Root of dir, so a process of the account (or of a previous
// owner) that swaps a directory for a symlink mid-walk redirects nothing
// outside. Nor does it follow a hard link out: a file with more than one
// link may have its other names anywhere (a previous owner's link to a
// file it may write, a build's link into root's package cache), so it is
// given only if it belongs to from, the tree's previous owner, already;
// any other stays whose it is. A nil account changes nothing.
func (a *Account) ChownTree(dir string, from uint32) error {
	if a == nil {
		return nil
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("give %s to %s: %w", dir, a.User, err)
	}
	defer root.Close()
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if !d.IsDir() {
			fi, err := root.Lstat(p)
			if err != nil {
				return err
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); !ok || (st.Nlink > 1 && st.Uid != from) {
				return nil
			}
		}
		return root.Lchown(p, int(a.UID), int(a.GID))
	})
	if err == nil {
		err = root.Lchown(".", int(a.UID), int(a.GID))
	}
	if err != nil {
		return fmt.Errorf("give %s to %s: %w", dir, a.User, err)
	}
	return nil
}

// OwnedBy reports whether path (not followed) belongs to the account (to
// the daemon's user for nil).
func (a *Account) OwnedBy(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	if a == nil {
		return int(st.Uid) == os.Geteuid()
	}
	return st.Uid == a.UID && st.Gid == a.GID
}

// Reach checks that the account can walk down to dir: every directory from
// / to dir must be searchable by it. It names the first one that is not.
func (a *Account) Reach(dir string) error {
	if a == nil || a.UID == 0 {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	p := "/"
	parts := strings.Split(strings.TrimPrefix(abs, "/"), "/")
	for i := 0; ; i++ {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%s cannot reach %s: %w", a.User, abs, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if !a.canSearch(fi.Mode(), st.Uid, st.Gid) {
			return fmt.Errorf("%s cannot reach %s: %s is mode %04o, owned by uid %d (make it searchable: chmod o+x %s)",
				a.User, abs, p, fi.Mode().Perm(), st.Uid, p)
		}
		if i == len(parts) || parts[i] == "" {
			return nil
		}
		p = filepath.Join(p, parts[i])
	}
}

func (a *Account) canSearch(mode fs.FileMode, uid, gid uint32) bool {
	perm := mode.Perm()
	switch {
	case uid == a.UID:
		return perm&0o100 != 0
	case slices.Contains(a.Groups, gid):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}
