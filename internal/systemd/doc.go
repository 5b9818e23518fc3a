// Package systemd is the daemon's side of the protocols systemd speaks with
// a service (SPEC §8): sd_notify, the watchdog, socket activation and the
// file descriptor store. It needs no libsystemd and no systemd: without the
// variables systemd sets, every function is a no-op or reports nothing.
//
// The contract:
//
//   - [Notify] sends one datagram to $NOTIFY_SOCKET (a path or an abstract
//     "@name"); without it, it returns nil. Several states go in one message,
//     newline-separated: Notify(Ready + "\n" + Status("2 apps live")). With
//     NotifyAccess=main systemd drops messages from any process but the
//     service's main one, so the daemon sends them itself. On an upgrade the
//     old main process sends [MainPID] with the new daemon's pid before it
//     exits; from then on only the new one is heard.
//   - [NotifyWithFDs], [StoreFDs] and [StoreConn] pass descriptors with
//     SCM_RIGHTS; they stay the caller's. A descriptor is always taken as an
//     int or through SyscallConn().Control, never through (*os.File).Fd,
//     which would switch a socket shared with the workers to blocking mode
//     for all of them (golang/go#43894).
//   - [WatchdogInterval] is systemd's deadline; the daemon pings [Watchdog]
//     at half of it, from its start, not only once it is ready.
//   - [Listeners] takes the descriptors systemd passed at fd 3, 4, … (socket
//     units and the file descriptor store), only when LISTEN_PID is this
//     process. Whatever it finds, it unsets LISTEN_PID, LISTEN_FDS and
//     LISTEN_FDNAMES and marks every passed descriptor close-on-exec, so
//     that no worker or build inherits them or the claim to them. Nothing
//     here changes a descriptor's blocking mode, except that a socket turned
//     into a Go listener or connection is made non-blocking, as Go needs;
//     none is ever made blocking.
//   - [Match] gives each socket the daemon wants the inherited one named
//     for it ([NameGitHTTP], [NameGitSSH], [NameControl], [NameAdmin],
//     [AppName]), else the one bound to its configured address, each
//     inherited socket to at most one want. What nobody claims comes back so the daemon can log and close
//     it. A socket unit names all its sockets alike (FileDescriptorName=), so
//     it takes one unit per name, or one unit whose sockets are matched by
//     address.
//   - [ChildEnv] and [SuccessorEnv] say what of systemd's variables a child
//     may see: a worker or build none, the daemon that takes over on an
//     upgrade the notify socket and the watchdog deadline.
package systemd
