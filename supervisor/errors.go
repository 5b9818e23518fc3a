package supervisor

import "errors"

var (
	// ErrNotUp means a worker never became ready.
	ErrNotUp = errors.New("worker did not come up")
	// ErrUnhealthy means a release failed its health check.
	ErrUnhealthy = errors.New("unhealthy")
	// ErrSocketClosed means a socket was used after the daemon let it go.
	ErrSocketClosed = errors.New("socket is closed")
)

// ErrNotAdoptable means a recorded worker's process is gone, or its pid now
// names another process.
var ErrNotAdoptable = errors.New("not the recorded process")
