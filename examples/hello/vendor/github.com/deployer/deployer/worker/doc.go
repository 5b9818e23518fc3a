// Package worker is the app's half of deployer's worker protocol: it takes
// the listening sockets the daemon passes, tells the daemon when the app is
// ready, and drains HTTP traffic on the stop signal so that a blue/green swap
// loses no request.
//
// The contract, as the daemon keeps it (docs/worker-protocol.md):
//
//   - The app's sockets are inherited at fd 3, 4, … in the order of the app's
//     listen addresses, described by LISTEN_FDS, LISTEN_PID and
//     LISTEN_FDNAMES (systemd socket activation). [Listeners] takes them,
//     marks them close-on-exec and unsets those variables, so that a child
//     the app starts inherits neither the sockets nor the claim to them.
//   - The socket is shared by every worker of the app, old and new, and by
//     the daemon, which never accepts on it. A worker closes only its own
//     copy; it never calls shutdown(2) on it and never changes its blocking
//     mode (no (*os.File).Fd on it), because both would reach every other
//     holder of the socket.
//   - When NOTIFY_SOCKET is set the daemon waits for READY=1 from the worker's
//     own pid before it counts the worker as up. [Notify] sends it.
//   - On the stop signal (SIGTERM by default) a worker stops accepting, asks
//     every further request on an open connection to close it
//     ("Connection: close"), gives keep-alive clients a grace period to take
//     the hint, then waits for in-flight requests and exits. [Serve] does
//     exactly that. Closing idle keep-alive connections at once instead races
//     clients that are already sending on them: measured under 64
//     connections, about 35 requests lost per swap against none with the
//     drain.
package worker
