package systemd

import "errors"

// Errors of this package, to be told apart with errors.Is.
var (
	// ErrBadEnvironment means a variable systemd sets is malformed:
	// LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES or NOTIFY_SOCKET.
	ErrBadEnvironment = errors.New("malformed systemd environment")

	// ErrBadFDName means a name systemd would refuse for a descriptor:
	// empty, longer than 255 bytes, or with a control character, a
	// non-ASCII byte or ':' (the separator of LISTEN_FDNAMES).
	ErrBadFDName = errors.New("invalid file descriptor name")

	// ErrTooManyFDs means more descriptors than one message can carry
	// (the kernel's SCM_MAX_FD, 253).
	ErrTooManyFDs = errors.New("too many descriptors for one message")

	// ErrWrongKind means an inherited descriptor is not of the kind asked
	// for: not a listening stream socket for Listener, not a unix datagram
	// socket for UnixConn.
	ErrWrongKind = errors.New("inherited descriptor is of another kind")
)
