// Package supervisor holds each app's listening sockets and runs its worker
// pools (SPEC §4).
//
// Invariants:
//   - a Socket is opened once and held for the daemon's life; the daemon never
//     accepts on it, shuts it down or closes it while workers may use it, so
//     the kernel's accept queue outlives every worker and no connection is
//     refused during a swap;
//   - workers get exactly fd 0-2 and the sockets at fd 3.., spawned without
//     (*os.File).Fd so a shared socket is never switched to blocking mode
//     under the workers already running;
//   - every worker runs in its own process group; retiring it signals the
//     group, waits the drain timeout, then SIGKILLs the group, and the
//     process is always reaped;
//   - a release is probed by Preflight on private loopback sockets only: no
//     live request reaches it before it answered healthy;
//   - StartPool either returns a pool whose every worker stayed up for
//     min_uptime, or stops everything it started: an old pool is never touched.
//
// Blue/green is the caller's: start the green pool, and only when it is up
// stop the blue one.
package supervisor
