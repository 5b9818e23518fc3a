package testutil

import (
	"testing"
	"time"
)

// pollInterval paces WaitFor: short enough not to slow the tests, long
// enough not to load a shared machine with the conditions' own work.
const pollInterval = 20 * time.Millisecond

// WaitFor polls cond until it holds, and fails t if limit passes first;
// what names the awaited thing in the failure message.
func WaitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		<-tick.C
	}
}
