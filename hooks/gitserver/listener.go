package gitserver

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Limits bound what a connection to a git listener may cost.
type Limits struct {
	// MaxConns is how many connections one listener holds at once.
	MaxConns int
	// Handshake is how long a connection may stay without an authenticated
	// request (HTTP) or session (SSH).
	Handshake time.Duration
	// Idle is how long a connection that has been busy may stay with
	// nothing in flight.
	Idle time.Duration
	// Stall is how long a push or fetch in flight may wait for one read of
	// its request (HTTP) or one write of its answer (HTTP and SSH).
	Stall time.Duration
}

// Listener holds at most MaxConns connections, and only authenticated work
// keeps one: a connection is busy while it serves an authenticated HTTP
// request or an SSH session, and idle otherwise — before it authenticates,
// and between requests.
//
// An idle connection is closed when its time is up (Limits.Handshake if it
// was never busy, else Limits.Idle), whatever it sends meanwhile, by a
// timer rather than a deadline that a server may move. And when MaxConns
// are open, a new connection takes the place of the one idle the longest.
// Only when every connection is busy does Accept wait, leaving new
// connections in the kernel's queue. So connections that do not
// authenticate can neither exhaust the daemon's descriptors nor keep a
// pusher out; the newest is the last to go, so a flood has to open
// MaxConns connections during one client's handshake to push it out.
type Listener struct {
	net.Listener
	limits Limits
	log    *slog.Logger
	name   string

	mu      sync.Mutex
	conns   map[*Conn]struct{}
	changed chan struct{} // a connection closed or went idle
	done    chan struct{}
	close   sync.Once
	evicted int       // since the last warning
	warned  time.Time // the last warning that the cap was reached
}

// NewListener limits ln; name ("git http", "git ssh") is for the log.
func NewListener(ln net.Listener, limits Limits, log *slog.Logger, name string) *Listener {
	return &Listener{
		Listener: ln, limits: limits, log: log, name: name,
		conns:   map[*Conn]struct{}{},
		changed: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
}

// fullWarnEvery paces the warning that the cap is reached: a flood must
// not flood the log too.
const fullWarnEvery = time.Minute

// Accept waits until there is room (fewer than MaxConns open, or an idle
// one to close), then accepts, closing the idle connection that goes first.
func (l *Listener) Accept() (net.Conn, error) {
	for !l.hasRoom() {
		if err := l.wait(); err != nil {
			return nil, err
		}
	}
	raw, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &Conn{Conn: raw, l: l}
	for {
		l.mu.Lock()
		if len(l.conns) < l.limits.MaxConns {
			l.conns[c] = struct{}{}
			c.since = time.Now()
			c.timer = time.AfterFunc(l.limits.Handshake, func() { c.Close() })
			l.mu.Unlock()
			return c, nil
		}
		victim := l.firstToGoLocked()
		if victim != nil {
			l.noteEvictionLocked()
		}
		l.mu.Unlock()
		if victim != nil {
			victim.Close()
			continue
		}
		// Every connection turned busy since hasRoom: hold this one
		// until one of them ends.
		if err := l.wait(); err != nil {
			raw.Close()
			return nil, err
		}
	}
}

func (l *Listener) hasRoom() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns) < l.limits.MaxConns || l.firstToGoLocked() != nil
}

func (l *Listener) wait() error {
	select {
	case <-l.changed:
		return nil
	case <-l.done:
		return net.ErrClosed
	}
}

func (l *Listener) signal() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// firstToGoLocked is the idle connection to close to make room: the one
// idle the longest (counted from its accept if it was never busy).
func (l *Listener) firstToGoLocked() *Conn {
	var first *Conn
	for c := range l.conns {
		if c.busy == 0 && (first == nil || c.since.Before(first.since)) {
			first = c
		}
	}
	return first
}

func (l *Listener) noteEvictionLocked() {
	l.evicted++
	if time.Since(l.warned) < fullWarnEvery {
		return
	}
	l.log.Warn(l.name+": max_connections reached: closing idle connections to make room",
		"max_connections", l.limits.MaxConns, "closed", l.evicted)
	l.warned, l.evicted = time.Now(), 0
}

// Close stops accepting; the open connections stay open.
func (l *Listener) Close() error {
	l.close.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// Conn is a connection a Listener accepted.
type Conn struct {
	net.Conn
	l     *Listener
	close sync.Once

	// guarded by l.mu
	busy  int         // requests or sessions in flight
	since time.Time   // when it went idle, or was accepted
	timer *time.Timer // closes it when idle too long
}

// Busy marks the connection as serving authenticated work until done is
// called: it is neither closed for idleness nor to make room meanwhile.
func (c *Conn) Busy() (done func()) {
	l := c.l
	l.mu.Lock()
	c.busy++
	c.timer.Stop()
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			c.busy--
			idle := c.busy == 0
			if idle {
				c.since = time.Now()
				c.timer.Reset(l.limits.Idle)
			}
			l.mu.Unlock()
			if idle {
				l.signal()
			}
		})
	}
}

// Close closes the connection and gives its place back.
func (c *Conn) Close() error {
	err := net.ErrClosed
	c.close.Do(func() {
		l := c.l
		l.mu.Lock()
		delete(l.conns, c)
		c.timer.Stop()
		l.mu.Unlock()
		l.signal()
		err = c.Conn.Close()
	})
	return err
}

type connKey struct{}

// withConn is ctx carrying c, if c is a Conn (or wraps one, as a TLS
// connection does).
func withConn(ctx context.Context, c net.Conn) context.Context {
	for {
		switch v := c.(type) {
		case *Conn:
			return context.WithValue(ctx, connKey{}, v)
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return ctx
		}
	}
}

// Busy marks the connection that serves a request (its context) busy
// until done is called, for authenticated work served beside git's, such
// as a fleet peer's. Without a Listener it does nothing.
func Busy(ctx context.Context) (done func()) {
	if c, ok := ctx.Value(connKey{}).(*Conn); ok {
		return c.Busy()
	}
	return func() {}
}
