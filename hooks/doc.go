// Package hooks is the git side of a push: the proc-receive and
// post-receive hooks git runs inside `git receive-pack`, and the scripts
// that install them (HookScript). The daemon's front door, which runs git
// for a pusher over HTTP or SSH, is package hooks/gitserver.
//
// The deploy branch is configured as a receive.procReceiveRefs ref, so git
// stores the objects and then, instead of moving the branch, runs the
// proc-receive hook: the deployer binary itself, in a process of its own.
// ProcReceive speaks git's proc-receive protocol, relays each command for
// the deploy branch to the daemon over the control socket (package
// control), streams the deploy's output back to the pusher as "remote:"
// lines, and answers ok or ng. The daemon moves the branch only after the
// new release went live, so a failed deploy leaves it untouched. Every other
// ref is refused by ProcReceive or, if git stored it, reported by
// PostReceive as stored but not deployed.
//
// The hooks know their push only through the environment the front door
// gives git (the Env constants): they hold no state and read no config.
package hooks
