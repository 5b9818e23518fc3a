// Package deployer is the pipeline of a deploy and the daemon that runs one
// per app (SPEC §1, §5).
//
// An App owns its repository, its release store, its held sockets and its
// live pool. Every change of what is live — a deploy now, later rollbacks and
// reloads — runs under the app's deploy lock, one at a time; the lock holder
// is the only writer of the live pool, the current link and the deploy branch.
//
// A deploy goes: new release vN, checkout, build, preflight on a private
// socket, green pool on the shared sockets, then cut-over (deploy branch
// moved by compare-and-swap, current swapped, blue retired). Any failure
// before cut-over stops green and leaves blue, current and the branch as
// they were, so the invariant "the deploy branch names the live revision"
// holds at every step.
//
// Deploys run on the daemon's context, not the pusher's: a pusher that
// disconnects only stops receiving output.
package deployer
