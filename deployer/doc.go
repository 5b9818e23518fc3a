// Package deployer is the pipeline of a deploy and the daemon that runs it
// for each app (README: "What a deploy does", "Commands").
//
// An App owns its repository, its release store, its held sockets and its
// pools. One goroutine per app, its loop, owns what changes: the config and
// sockets, the live, green and draining pools (saved to workers.json at
// every change, for the next daemon to adopt), the running operation and
// its queue, the health.watch. Every change of what is live — deploy, rollback, reload,
// config reload, the automatic rollback of health.watch, the start at daemon
// start — and cleanup run as operations that take the app's turn one at a
// time (the "deploy lock" users see); the loop runs each in a goroutine it
// tracks, and the operation changes app state only through requests to the
// loop. The operation holding the turn is the only writer of the current
// link, the deploy branch and the releases' metadata.
//
// A deploy goes: new release vN, checkout, build, preflight on a private
// socket, green pool on the shared sockets, then cut-over (deploy branch
// moved by compare-and-swap, current swapped, blue retired). Any failure
// before or during cut-over stops green and leaves blue, current and the
// branch as they were, so the invariant "the deploy branch names the live
// revision" holds at every step.
//
// Operations run on the daemon's context, not their client's: a client that
// disconnects while it waits for the turn stops waiting; once started, an
// operation ends only on its own, by deployer cancel, or at shutdown.
package deployer
