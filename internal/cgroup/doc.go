// Package cgroup puts the processes the daemon starts — builds, hooks,
// preflight instances, workers — each in a cgroup v2 group of its own, so
// that stopping one kills everything it forked (cgroup.kill), whatever left
// its process group or double-forked: nothing can outlive it, hold a port
// or survive a restart of the daemon unseen.
//
// The daemon's groups live in one subtree, <daemon's own cgroup>/deployer-<tag>,
// where tag is derived from data_dir: a restarted daemon finds the same
// subtree and, in it, what its predecessor left (Tree.List), to adopt (live
// workers) or kill (anything else).
//
// cgroup v2 is found in /proc/self/mountinfo (a pure v2 host mounts it at
// /sys/fs/cgroup, a hybrid one at /sys/fs/cgroup/unified) and the daemon's
// group in /proc/self/cgroup. Where it is not mounted or not writable, Open
// fails and the caller falls back to process groups, saying so in its log.
// Processes are placed in their group as they are created (clone3 with
// CLONE_INTO_CGROUP, Linux 5.7), never moved after the fact.
package cgroup
