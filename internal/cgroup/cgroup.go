package cgroup

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnavailable means no writable cgroup v2 hierarchy holds the daemon.
var ErrUnavailable = errors.New("cgroup v2 is not available")

// Tree is the daemon's subtree of cgroups.
type Tree struct {
	dir   string
	mount string // where the hierarchy is mounted, to name groups as /proc/PID/cgroup does
	base  string // the group the tree lives in: the daemon's own (or its parent, see DaemonLeaf)

	mu      sync.Mutex
	enabled []string // controllers turned on down the tree, for limits
}

// DaemonLeaf is the child group of its own cgroup the daemon moves into to
// free that group for controllers (cgroup v2 allows controllers in a
// group's children only when the group itself holds no process). A daemon
// whose own group has this name keeps its tree beside it, in the parent:
// the one a daemon started before the move (or an upgrade's predecessor)
// used.
const DaemonLeaf = "deployer-daemon"

// Open finds (or makes) the daemon's subtree for dataDir.
func Open(dataDir string) (*Tree, error) {
	mount, err := mountPoint()
	if err != nil {
		return nil, err
	}
	own, err := ownGroup()
	if err != nil {
		return nil, err
	}
	if filepath.Base(own) == DaemonLeaf {
		own = filepath.Dir(own)
	}
	return openIn(mount, own, dataDir)
}

func openIn(mount, base, dataDir string) (*Tree, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(abs))
	dir := filepath.Join(mount, base, "deployer-"+hex.EncodeToString(sum[:])[:12])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	// Writable means we can make groups in it and kill them.
	probe := filepath.Join(dir, ".probe")
	if err := os.Mkdir(probe, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	_, kerr := os.Stat(filepath.Join(probe, "cgroup.kill"))
	os.Remove(probe)
	if kerr != nil {
		return nil, fmt.Errorf("%w: no cgroup.kill (Linux 5.14): %w", ErrUnavailable, kerr)
	}
	return &Tree{dir: dir, mount: mount, base: base}, nil
}

// Dir is the subtree's directory.
func (t *Tree) Dir() string { return t.dir }

// mountPoint is where the cgroup v2 hierarchy is mounted.
func mountPoint() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mount-point ... - fstype source options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		fields := strings.Fields(pre)
		if len(fields) >= 5 {
			return fields[4], nil
		}
	}
	return "", fmt.Errorf("%w: not mounted", ErrUnavailable)
}

// ownGroup is the daemon's cgroup v2 path ("0::/path" in /proc/self/cgroup).
func ownGroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: the daemon is in no cgroup v2 group", ErrUnavailable)
}

// Group is one cgroup of the tree.
type Group struct {
	Name string // relative to the tree, e.g. "hello/v3-w0-17"
	dir  string
	top  string // the tree's directory: Remove stops there
	path string // as /proc/PID/cgroup names it
	fd   int    // O_PATH descriptor, for CLONE_INTO_CGROUP
}

// New makes the group name (a relative path; its parents are made too,
// with the controllers Enable turned on).
func (t *Tree) New(name string) (*Group, error) {
	dir := filepath.Join(t.dir, filepath.Clean("/"+name))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", name, err)
	}
	t.mu.Lock()
	on := t.enabled
	t.mu.Unlock()
	if len(on) > 0 {
		for p := filepath.Dir(dir); p != t.dir && strings.HasPrefix(p, t.dir+"/"); p = filepath.Dir(p) {
			if err := enable(p, on); err != nil {
				os.Remove(dir)
				return nil, fmt.Errorf("cgroup %s: %w", name, err)
			}
		}
	}
	return t.open(name, dir)
}

// Get opens the existing group name, for a process a previous daemon left.
func (t *Tree) Get(name string) (*Group, error) {
	return t.open(name, filepath.Join(t.dir, filepath.Clean("/"+name)))
}

func (t *Tree) open(name, dir string) (*Group, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", name, err)
	}
	return &Group{Name: name, dir: dir, top: t.dir, fd: fd, path: t.groupPath(dir)}, nil
}

// List is every group under prefix (a directory of the tree) that holds no
// group itself: what a previous daemon left there.
func (t *Tree) List(prefix string) []string {
	var out []string
	root := filepath.Join(t.dir, filepath.Clean("/"+prefix))
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() || p == root {
			return nil
		}
		if leaf(p) {
			rel, _ := filepath.Rel(t.dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func leaf(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.IsDir() {
			return false
		}
	}
	return true
}

// FD is the descriptor to pass as SysProcAttr.CgroupFD (UseCgroupFD).
func (g *Group) FD() int { return g.fd }

// Kill kills every process in the group (cgroup.kill).
func (g *Group) Kill() error {
	if err := os.WriteFile(filepath.Join(g.dir, "cgroup.kill"), []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cgroup %s: kill: %w", g.Name, err)
	}
	return nil
}

// Populated reports whether a process is left in the group.
func (g *Group) Populated() bool {
	b, err := os.ReadFile(filepath.Join(g.dir, "cgroup.events"))
	if err != nil {
		return false
	}
	return strings.Contains(string(b), "populated 1")
}

// Remove kills what is left in the group, waits (up to 10s) until it is
// empty, and removes it and its parents that became empty, up to the tree.
func (g *Group) Remove() error {
	defer g.Close()
	if err := g.Kill(); err != nil {
		return err
	}
	// The kernel gives no event a descriptor could wait on here without
	// inotify; poll, bounded.
	deadline := time.Now().Add(10 * time.Second)
	for g.Populated() {
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: still populated 10s after cgroup.kill", g.Name)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for dir := g.dir; dir != g.top && strings.HasPrefix(dir, g.top+"/"); dir = filepath.Dir(dir) {
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
			break // not empty: a sibling lives on
		}
	}
	return nil
}

// Close lets go of the group's descriptor; the group stays.
func (g *Group) Close() {
	if g.fd >= 0 {
		unix.Close(g.fd)
		g.fd = -1
	}
}

// Prune removes the tree's empty groups, and the tree itself if nothing is
// left in it: a daemon that stops for good leaves no trace.
func (t *Tree) Prune() {
	var dirs []string
	_ = filepath.WalkDir(t.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = unix.Rmdir(dirs[i]) // fails, as it should, where a process is left
	}
}
