// Package hooks is where pushes come in: git's smart-HTTP protocol, and the
// proc-receive hook that hands a push of the deploy branch to the daemon.
//
// git itself carries the wire: the HTTP handler pipes each request through
// `git receive-pack` or `git upload-pack --stateless-rpc`, which handle thin
// packs, locking, fsync and every protocol version. The deploy branch is
// configured as a receive.procReceiveRefs ref, so git stores the objects and
// then, instead of moving the branch, runs the proc-receive hook: the
// deployer binary itself, which relays the push to the daemon over the
// control socket, streams the deploy's output back to the pusher as
// "remote:" lines, and answers ok or ng. The daemon moves the branch only
// after the new release went live, so a failed deploy leaves it untouched.
//
// Invariants: nothing is read or written before the pusher authenticated;
// an unknown app is a 404 and nothing is created for it.
package hooks
