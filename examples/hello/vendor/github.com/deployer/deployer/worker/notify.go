package worker

import (
	"fmt"
	"net"
	"os"
)

// Notify sends state (such as "READY=1", "STOPPING=1" or "STATUS=…",
// newline-separated for several) to the supervisor as one datagram on the
// unix socket named by NOTIFY_SOCKET, the sd_notify protocol. A name that
// starts with '@' is in the abstract namespace. Without NOTIFY_SOCKET it does
// nothing and returns nil.
//
// The daemon attributes the message by the sender's pid, so it must come
// from the worker process itself, not from a helper it spawns.
func Notify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] != '/' && name[0] != '@' {
		return fmt.Errorf("notify: NOTIFY_SOCKET %q is neither an absolute path nor an abstract name", name)
	}
	// The net package maps a leading '@' to the abstract namespace.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify %q: %w", state, err)
	}
	return nil
}

// Ready tells the supervisor the worker is ready: Notify("READY=1").
func Ready() error {
	return Notify("READY=1")
}
