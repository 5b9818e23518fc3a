// Package gitserver is where pushes come in: git's smart-HTTP protocol and
// git over SSH, for the repository of every configured app.
//
// git itself carries the wire: each request or SSH session runs
// `git receive-pack` or `git upload-pack` on the app's repository (the HTTP
// handler with --stateless-rpc), which handle thin packs, locking, fsync and
// every protocol version. Both transports configure git the same way (the
// deploy branch as a receive.procReceiveRefs ref, the hooks of package hooks
// as core.hooksPath, receive.maxInputSize, fsckObjects) and give it the
// environment the hooks read, so a push behaves the same on either.
//
// HTTP authenticates with a token, checked against a file of SHA-256
// hashes that is re-read on every check (Tokens); SSH with a public key in an
// OpenSSH authorized_keys file, whose from= option is honoured and whose
// other options that would grant more are refused. SSH allows no shell,
// pty, forwarding or command other than git-receive-pack and
// git-upload-pack.
//
// An app that names pushers (apps.APP.pushers) admits only those: any
// other authenticated pusher is refused before git runs, for fetch and
// clone as for push, with a one-line reason (a text/plain 403 that git
// prints as "remote:" lines; over SSH a line on stderr and exit status 1).
//
// Both serve on a Listener, which caps the connections of each listener
// and closes those that do no authenticated work: a connection is busy
// only while it serves an authenticated HTTP request or an SSH session;
// an idle one is closed by a timer after Limits.Handshake (never busy) or
// Limits.Idle, or sooner to make room for a new one at the cap. A request
// in flight is bounded between reads and writes (Limits.Stall), never as a
// whole, so a long push goes through as long as it moves.
//
// Invariants: nothing is read or written before the pusher authenticated
// and was admitted; a listener holds at most MaxConns connections, plus the
// one it has just accepted while it closes an idle one or waits for a busy
// one to end; one that never authenticates is gone after Limits.Handshake;
// an unknown app is refused (a 404 over HTTP) and nothing is created for
// it; git runs with none of the daemon's own or git's variables from the
// daemon's environment; a client that goes away ends git's input and its
// output is drained, so git is never killed by a signal it could not clean
// up after (its quarantine of received objects) before WaitDelay.
package gitserver
