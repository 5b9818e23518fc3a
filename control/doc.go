// Package control is the daemon's control API: JSON over HTTP on a unix
// socket that only the daemon's owner may open (SPEC §2). The server side
// (NewMux) serves a deployer daemon through the API interface; the client
// side (Client) is what the command line and the proc-receive hook use.
//
// Short requests answer with one JSON value. Long operations (push, deploy,
// rollback, reload, logs, upgrade) answer 200 at once and then stream
// newline-delimited JSON messages: {"out": "..."} for progress, then exactly
// one {"ok": true} or {"error": "...", "code": "..."}. A request that fails
// before it starts answers a non-200 status with the same
// {"error": "...", "code": "..."} body.
//
// Errors keep their identity across the socket: the server names the
// sentinel an error wraps by a code (see codes.go), and the client rebuilds
// an *Error whose text is the daemon's, unchanged, and which satisfies
// errors.Is for that sentinel — for example deployer.ErrLockTimeout. An
// error that wraps no known sentinel travels with the code "error" and
// matches nothing but its text.
//
// Other packages may add endpoints to the mux NewMux returns; they answer
// with Reply, Stream and Decode so every endpoint speaks the same format.
package control
