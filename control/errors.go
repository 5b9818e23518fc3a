package control

import "errors"

// Errors of the client, and of requests the server could not read.
var (
	// ErrDaemonDown means nothing listens on the control socket.
	ErrDaemonDown = errors.New("the deployer daemon is not running")
	// ErrSocketPermission means the socket (or its directory) is not open
	// to this user: the daemon may well be running.
	ErrSocketPermission = errors.New("permission denied")
	// ErrStreamCut means the daemon's answer ended before a result.
	ErrStreamCut = errors.New("the daemon's answer ended early")
	// ErrBadRequest means the daemon could not read a request.
	ErrBadRequest = errors.New("bad request")
)

// Error is an error the daemon reported. Its text is the daemon's; Unwrap
// returns the sentinel its Code names, so errors.Is works on this side of
// the socket as it did on the other.
type Error struct {
	Code    string // a code of the table in codes.go, or one this client does not know
	Message string
}

func (e *Error) Error() string { return e.Message }

// Unwrap is the sentinel e's code names, or nil.
func (e *Error) Unwrap() error { return sentinel(e.Code) }
