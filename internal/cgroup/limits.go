package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotEnforced means a limit was asked for whose controller the tree does
// not have.
var ErrNotEnforced = errors.New("not enforced")

// Limits bound one group and everything in it; zero fields set nothing.
type Limits struct {
	Memory int64   // bytes: memory.max
	Pids   int     // pids.max
	CPU    float64 // CPUs: cpu.max
}

// Controllers are the cgroup v2 controllers that l needs.
func (l Limits) Controllers() []string {
	var c []string
	if l.CPU > 0 {
		c = append(c, "cpu")
	}
	if l.Memory > 0 {
		c = append(c, "memory")
	}
	if l.Pids > 0 {
		c = append(c, "pids")
	}
	return c
}

// groupPath is the group at dir as /proc/PID/cgroup names it ("/a/b").
func (t *Tree) groupPath(dir string) string {
	return "/" + strings.TrimPrefix(strings.TrimPrefix(dir, t.mount), "/")
}

// Enable turns the controllers in want on for every group of the tree, as
// far as they are delegated to the daemon, and returns nil only if all of
// them are. Otherwise the error (wrapping ErrNotEnforced) names the ones
// that are not and why; the others are on.
//
// A controller is delegated when it is listed in cgroup.controllers of the
// group the tree lives in. Turning it on there needs that group to hold no
// process: if it holds the daemon (ours lists the daemon's pid and those of
// its own helpers, such as the fd keeper) and nothing else, they move into
// its child DaemonLeaf first. The root group is never touched.
func (t *Tree) Enable(want []string, ours []int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	want = slices.DeleteFunc(slices.Clone(want), func(c string) bool { return slices.Contains(t.enabled, c) })
	if len(want) == 0 {
		return nil
	}
	have := controllers(filepath.Join(t.dir, "cgroup.controllers"))
	var lack []string
	for _, c := range want {
		if !slices.Contains(have, c) {
			lack = append(lack, c)
		}
	}
	why := ""
	if len(lack) > 0 {
		base := filepath.Join(t.mount, t.base)
		delegated := controllers(filepath.Join(base, "cgroup.controllers"))
		var can []string
		for _, c := range lack {
			if slices.Contains(delegated, c) {
				can = append(can, c)
			}
		}
		switch {
		case len(can) < len(lack):
			why = fmt.Sprintf("not delegated to the daemon's cgroup %s (it has: %s)", t.base, listOr(delegated))
		case t.base == "/" || t.base == "":
			why = "the daemon runs in the root cgroup, whose controllers it leaves alone"
		}
		if len(can) > 0 && t.base != "/" && t.base != "" {
			if err := vacate(base, ours); err != nil {
				why = err.Error()
			} else if err := enable(base, can); err != nil {
				why = err.Error()
			}
			have = controllers(filepath.Join(t.dir, "cgroup.controllers"))
		}
	}
	var on, off []string
	for _, c := range want {
		if slices.Contains(have, c) {
			on = append(on, c)
		} else {
			off = append(off, c)
		}
	}
	if len(on) > 0 {
		if err := enable(t.dir, on); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrNotEnforced, strings.Join(on, ", "), err)
		}
		// The app directories made before now.
		entries, _ := os.ReadDir(t.dir)
		for _, e := range entries {
			if e.IsDir() {
				_ = enable(filepath.Join(t.dir, e.Name()), on)
			}
		}
		t.enabled = append(t.enabled, on...)
	}
	if len(off) > 0 {
		return fmt.Errorf("%w: %s: %s", ErrNotEnforced, strings.Join(off, ", "), why)
	}
	return nil
}

// Enabled are the controllers Enable turned on.
func (t *Tree) Enabled() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.enabled)
}

func listOr(cs []string) string {
	if len(cs) == 0 {
		return "none"
	}
	return strings.Join(cs, " ")
}

func controllers(file string) []string {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

// enable writes "+c ..." to dir's cgroup.subtree_control.
func enable(dir string, cs []string) error {
	cur := controllers(filepath.Join(dir, "cgroup.subtree_control"))
	var add []string
	for _, c := range cs {
		if !slices.Contains(cur, c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := writeFile(filepath.Join(dir, "cgroup.subtree_control"), strings.Join(add, " ")); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("cgroup %s holds processes of its own, so its children cannot have controllers", dir)
		}
		return fmt.Errorf("enable %s in %s: %w", strings.Join(cs, " "), dir, err)
	}
	return nil
}

// vacate moves the processes of base (all of which must be in ours) into
// base/DaemonLeaf.
func vacate(base string, ours []int) error {
	b, err := os.ReadFile(filepath.Join(base, "cgroup.procs"))
	if err != nil {
		return err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		if !slices.Contains(ours, pid) {
			return fmt.Errorf("cgroup %s holds process %d, which is not the daemon's: run the daemon in a cgroup of its own (systemd: Delegate=yes)", base, pid)
		}
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		return nil
	}
	leaf := filepath.Join(base, DaemonLeaf)
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	for _, pid := range pids {
		if err := writeFile(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(pid)); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("move pid %d to %s: %w", pid, leaf, err)
		}
	}
	return nil
}

// Limit applies l to the group. It fails with ErrNotEnforced, having set
// what it could, if a controller l needs is not on.
func (g *Group) Limit(l Limits) error {
	var errs []error
	set := func(file, val, ctl string) {
		err := writeFile(filepath.Join(g.dir, file), val)
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("%w: no %s controller", ErrNotEnforced, ctl)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%s: %w", file, val, err))
		}
	}
	if l.Memory > 0 {
		set("memory.max", strconv.FormatInt(l.Memory, 10), "memory")
	}
	if l.Pids > 0 {
		set("pids.max", strconv.Itoa(l.Pids), "pids")
	}
	if l.CPU > 0 {
		const period = 100000
		set("cpu.max", fmt.Sprintf("%d %d", int64(l.CPU*period), period), "cpu")
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cgroup %s: %w", g.Name, err)
	}
	return nil
}

// Path is the group as /proc/PID/cgroup names it.
func (g *Group) Path() string { return g.path }

// Path is the tree as /proc/PID/cgroup names it: the groups of the
// daemon's processes are below it.
func (t *Tree) Path() string { return t.groupPath(t.dir) }

// Of is the cgroup v2 path of process pid ("" if it cannot be read).
func Of(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	return ""
}

// writeFile writes val to an existing cgroup file: cgroupfs makes no file,
// so a missing one (its controller off) is ErrNotExist, not EACCES.
func writeFile(path, val string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(val)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Procs are the processes in group name of the tree (cgroup.procs), none
// if it cannot be read.
func (t *Tree) Procs(name string) []int {
	b, err := os.ReadFile(filepath.Join(t.dir, filepath.Clean("/"+name), "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// CPUUsage is the CPU time the processes of group name have used
// (cpu.stat's usage_usec, there with or without the cpu controller), and
// whether it could be read.
func (t *Tree) CPUUsage(name string) (time.Duration, bool) {
	b, err := os.ReadFile(filepath.Join(t.dir, filepath.Clean("/"+name), "cpu.stat"))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, false
			}
			return time.Duration(n) * time.Microsecond, true
		}
	}
	return 0, false
}
