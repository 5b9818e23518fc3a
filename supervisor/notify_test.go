package supervisor

import (
	"testing"
	"time"
)

func received(ch <-chan string) []string {
	var got []string
	for {
		select {
		case m := <-ch:
			got = append(got, m)
		case <-time.After(50 * time.Millisecond):
			return got
		}
	}
}

// A message that arrived before its worker registered is the worker's only
// if it came from the worker's group: a pid alone may have been another
// app's process (pids are reused), whose READY=1 must not bring up a
// worker of this app.
func TestNotifyEarlyMessageOfARecycledPidIsNotClaimed(t *testing.T) {
	n := testNotifier(t)
	n.deliver(4242, "/deployer-x/other/build-v3-7", "READY=1") // another app's build, pid 4242
	ch := make(chan string, 16)
	n.register(4242, "/deployer-x/hello/v1-w0-9", ch) // now a worker of hello has pid 4242
	if got := received(ch); len(got) != 0 {
		t.Fatalf("the worker got %q, sent by another app's process that had its pid", got)
	}
}

// One app's process cannot flood the queue of early messages: another
// app's worker that says READY=1 before it is registered is still heard.
func TestNotifyEarlyFloodOfOneGroupDropsNoOtherGroupsMessage(t *testing.T) {
	n := testNotifier(t)
	for i := range 2 * maxEarly {
		n.deliver(10000+i, "/deployer-x/other/build-v3-7", "READY=1")
	}
	n.deliver(777, "/deployer-x/hello/v2-w0-11", "READY=1")
	ch := make(chan string, 16)
	n.register(777, "/deployer-x/hello/v2-w0-11", ch)
	if got := received(ch); len(got) != 1 || got[0] != "READY=1" {
		t.Fatalf("the worker's early READY=1 was lost to another app's flood: got %q", got)
	}
}
