// Package fdstore keeps the daemon's descriptors in a small process of its
// own, so that they outlive the daemon: the listening sockets (git, SSH,
// control, notify and every app's), and a copy of the read end of each live
// worker's output pipe. It is to the daemon what systemd's file descriptor
// store (FDSTORE=1) is to a service, and it works without systemd.
//
// The keeper is the deployer binary run as `deployer fdstore`, started by
// the first daemon and left running across a crash (kill -9, OOM) or an
// upgrade: the next daemon connects to its socket and takes everything back
// (List), so the apps' accept queues never close and a worker whose daemon
// died never writes to a pipe without a reader. A graceful stop of the
// daemon ends the keeper (Quit).
//
// Invariants: the keeper holds descriptors and nothing else; it never reads
// or writes through them. Its socket is owner-only and it talks only to
// peers of its own uid (SO_PEERCRED). A name maps to at most one
// descriptor: Put replaces and closes the previous one.
//
// Protocol: SOCK_SEQPACKET; one request, one reply. "PUT name" with one
// descriptor (SCM_RIGHTS) → "OK"; "DEL name" → "OK"; "LIST" → one
// "FD name" message with its descriptor per entry, then "END"; "QUIT" →
// "OK", and the keeper exits. A failed request is answered "ERR reason".
package fdstore
