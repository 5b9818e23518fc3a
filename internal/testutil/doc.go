// Package testutil is what the tests of several packages share: waiting
// for a condition with a deadline, and an HTTP load that counts every
// request it loses.
//
// WaitFor polls, because what the tests wait for (a line in a log, a
// process gone, a number of answers) gives no event to wait on; it never
// waits longer than its limit, and fails the test when the limit passes.
//
// Load sends requests the way wrk does: HTTP/1.1 keep-alive connections,
// back to back, and no retries. A request lost when a server closes a
// kept-alive connection is a failure, not something to try again on a new
// connection as net/http's Transport does for a GET; that loss is what the
// zero-downtime tests exist to catch.
package testutil
