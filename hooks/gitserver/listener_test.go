package gitserver

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// limitedListener is a Listener on a random local port whose accepted
// connections arrive on the returned channel.
func limitedListener(t *testing.T, limits Limits) (*Listener, <-chan *Conn) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(raw, limits, slog.New(slog.DiscardHandler), "test")
	t.Cleanup(func() { l.Close() })
	accepted := make(chan *Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c.(*Conn)
		}
	}()
	return l, accepted
}

func dial(t *testing.T, l *Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func accept(t *testing.T, accepted <-chan *Conn) *Conn {
	t.Helper()
	select {
	case c := <-accepted:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted within 5s")
		return nil
	}
}

// closedWithin reports how long the server took to close c, failing t if
// it is still open after limit.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	_, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %s", limit)
	}
	return time.Since(start)
}

// stillOpen fails t if the server closed c within d.
func stillOpen(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := c.Read(b[:])
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("connection closed within %s: %v", d, err)
	}
}

func TestListenerClosesAConnectionThatNeverAuthenticatesEvenIfItTalks(t *testing.T) {
	l, accepted := limitedListener(t, Limits{MaxConns: 4, Handshake: 300 * time.Millisecond, Idle: time.Hour})
	c := dial(t, l)
	srv := accept(t, accepted)
	go io.Copy(io.Discard, srv) // the server reads whatever comes
	go func() {
		for range 20 {
			if _, err := c.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	took := closedWithin(t, c, 3*time.Second)
	if took < 250*time.Millisecond {
		t.Fatalf("closed after %s, before the handshake timeout", took)
	}
}

func TestListenerClosesABusyConnectionOnlyAfterItIsIdleTooLong(t *testing.T) {
	l, accepted := limitedListener(t, Limits{MaxConns: 4, Handshake: 200 * time.Millisecond, Idle: 600 * time.Millisecond})
	c := dial(t, l)
	done := accept(t, accepted).Busy()
	stillOpen(t, c, 800*time.Millisecond) // past both timeouts
	done()
	took := closedWithin(t, c, 3*time.Second)
	if took < 500*time.Millisecond {
		t.Fatalf("closed %s after it went idle, before the idle timeout", took)
	}
}

func TestListenerMakesRoomByClosingTheLongestIdleConnection(t *testing.T) {
	l, accepted := limitedListener(t, Limits{MaxConns: 3, Handshake: time.Hour, Idle: time.Hour})
	stranger := dial(t, l)
	accept(t, accepted)
	pushing := dial(t, l)
	accept(t, accepted).Busy()
	pushed := dial(t, l)
	accept(t, accepted).Busy()() // busy once, idle since after the stranger came

	newcomer := dial(t, l)
	accept(t, accepted)
	closedWithin(t, stranger, 3*time.Second)
	stillOpen(t, pushed, 100*time.Millisecond)

	dial(t, l)
	accept(t, accepted)
	closedWithin(t, pushed, 3*time.Second)
	stillOpen(t, newcomer, 100*time.Millisecond)
	stillOpen(t, pushing, 100*time.Millisecond) // a busy one never goes
}

func TestListenerWaitsWhileEveryConnectionIsBusy(t *testing.T) {
	l, accepted := limitedListener(t, Limits{MaxConns: 1, Handshake: time.Hour, Idle: time.Hour})
	first := dial(t, l)
	done := accept(t, accepted).Busy()
	dial(t, l) // the kernel completes the handshake; the listener does not accept it
	select {
	case <-accepted:
		t.Fatal("a connection was accepted beyond max_connections")
	case <-time.After(300 * time.Millisecond):
	}
	done()
	accept(t, accepted)
	closedWithin(t, first, 3*time.Second) // the idle one made room
	l.Close()
	if _, ok := <-accepted; ok {
		t.Fatal("accepted after Close")
	}
}

func TestListenerAcceptReturnsOnCloseWhileWaitingForRoom(t *testing.T) {
	l, accepted := limitedListener(t, Limits{MaxConns: 1, Handshake: time.Hour, Idle: time.Hour})
	dial(t, l)
	accept(t, accepted).Busy()
	time.AfterFunc(100*time.Millisecond, func() { l.Close() })
	select {
	case _, ok := <-accepted:
		if ok {
			t.Fatal("accepted beyond the cap")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waiting 5s after Close")
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}
