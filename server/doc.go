// Package server is the deployer daemon as a server: it owns every
// descriptor the daemon holds — the git HTTP and SSH listeners, the admin
// listener (package admin), the control socket, the notify socket and each
// app's listening sockets — and the servers on them, with the
// net/http.Server shape: New, Serve, Shutdown.
//
// Descriptors outlive the daemon. Each one is also held by the keeper
// (package fdstore), so after a crash, an OOM kill or an upgrade the next
// daemon takes them back instead of opening new ones: the kernel's accept
// queues never close, and connections made while no daemon runs wait there.
// The workers outlive the daemon too; the next one adopts them (package
// deployer, workers.json).
//
// An upgrade (Upgrade) checks the new binary, stops taking connections
// (they queue), waits for the pushes and operations in flight, lets go of
// the workers without stopping them, and starts the new binary, which takes
// everything back exactly as after a crash. The old daemon exits only once
// the new one says it serves; if it does not, the old one takes everything
// back itself and goes on, and the upgrade fails with the reason.
//
// cmd/deployer keeps flags, config and signals; this package keeps the rest
// of the daemon's life.
package server
