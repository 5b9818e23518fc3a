package worker

import "errors"

// Errors from [Listeners], to be told apart with errors.Is.
var (
	// ErrNoSockets means the process inherited no sockets: it was not
	// started by deployer (or by another socket-activating supervisor).
	ErrNoSockets = errors.New("no inherited sockets")

	// ErrNotOurSockets means LISTEN_PID names another process: the sockets
	// were handed to a parent (usually a shell that did not exec the app).
	ErrNotOurSockets = errors.New("inherited sockets belong to another process")
)
