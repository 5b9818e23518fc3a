package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// WarmUserAgent is the User-Agent of the warm-up requests, for an app that
// wants to tell them apart (or leave them out of its access log).
const WarmUserAgent = "deployer-warmup"

// Warmup is what Warm sends: GET Path to Addr, Requests in all, over Conns
// keep-alive connections per worker at once, for at most Limit. With
// ConnLife set, a connection is replaced after that many requests, as live
// clients come and go: the warm-up dials another, and closes the old one
// once the new one is the pool's (else the old one carries on). With Share
// set, the pool's processes may use at most that share of the CPU that was
// idle while the pool started (and at least minWarmCPU cores) meanwhile:
// the warm-up then takes what the live workers do not use, and no more.
type Warmup struct {
	Addr, Path string
	Conns      int
	Requests   int
	ConnLife   int
	Limit      time.Duration
	Share      float64
}

// WarmResult is what a warm-up did.
type WarmResult struct {
	// Sent and OK count the requests sent over the connections kept, and
	// those answered 2xx.
	Sent, OK int
	// Workers is how many requests each worker of the pool answered, where
	// the connection's owner could be told; nil where it could not.
	Workers []int
	// Conns counts the connections that carried a request.
	Conns int
	// Strays counts the connections another process (the live pool)
	// accepted: each was closed before any request was sent on it.
	Strays int
	// First is the first failure, if any.
	First error
	// Spare is how many cores were idle while the pool started, and CPU
	// the budget, in cores, the pool's processes were held to (0: the
	// warm-up was not paced).
	Spare, CPU float64
}

// maxRedials bounds, per connection of a warm-up (all its connections
// sharing the bound; a connection the server closed after its answer, or
// one the warm-up replaces after w.ConnLife requests, is replaced by a new
// one with its own share), how many times a connection that went to the wrong
// process is closed and dialled again.
const maxRedials = 16

// starvedPace is the pause between redials once they are past maxRedials
// while a worker of the pool has had no connection yet.
const starvedPace = 10 * time.Millisecond

// Warm warms the pool up before its cut-over: it sends GET w.Path to the
// live socket at w.Addr until w.Requests have been sent, w.Limit has
// passed or ctx ends. A request that fails is counted, not retried: the
// caller decides what the count means.
//
// On the shared socket a new connection goes to whichever process accepts
// it first, and an idle live pool takes its share. So once a new
// connection is accepted, and before any request is sent on it, Warm asks
// the kernel (sock_diag) for the inode of the socket the server side
// holds, and keeps the connection only if one of this pool's processes
// holds it, and only while that worker has fewer than w.Conns of them
// open; otherwise it closes it and dials again (maxRedials times per
// connection, on average, at most, unless a worker has had no connection
// yet: then paced, until w.Limit). No answer of another process is
// counted, even from a server that closes every connection after one
// answer, and every worker of the pool gets its share, however idle the
// live pool is (an idle one takes most new connections). Where the owner
// cannot be told (no sock_diag) the connection is kept.
//
// With w.ConnLife set, connections are replaced as they would be by live
// clients, so the app runs its connections' whole life while warming:
// accepted, carrying requests, closed by the client. A JIT compiles its
// hot code for the objects it has seen; a first close changes the shape
// of the stream objects that code takes, and throws much of it away.
// Without it, the first connections green ever sees close are the
// warm-up's own, as it ends: at the cut-over, under live load. A
// connection is closed only once its replacement is the pool's: where the
// live pool takes every new one, past the redials, the old one carries on
// (and none is replaced while the redials are spent), so that the warm-up
// still sends all its requests.
func (p *Pool) Warm(ctx context.Context, w Warmup) WarmResult {
	var pc *pacer
	var spare float64
	if w.Share > 0 {
		spare = spareCPU(p.idle, sampleIdle(), time.Since(p.started), p.cpuTime())
		pc = newPacer(max(w.Share*spare, minWarmCPU), p.cpuTime)
	}
	res := warm(ctx, w, len(p.workers), p.connOwner, pc)
	if pc != nil {
		res.Spare, res.CPU = spare, pc.cores
	}
	return res
}

// connOwner is the index of the worker of p whose process accepted c, or
// -1; known is false where that cannot be told. It waits, up to limit or
// ctx's end, until some process has accepted c: the owner is known before
// any request is sent, so that no answer of another process is ever
// counted, whether or not the server keeps its connections open.
func (p *Pool) connOwner(ctx context.Context, c net.Conn, limit time.Duration) (index int, known bool) {
	ino, ok := acceptedInode(ctx, c, limit)
	if !ok {
		return -1, false
	}
	inodes := map[uint64]bool{ino: true}
	for i, wk := range p.workers {
		for _, pid := range wk.procs() {
			if holdsAny(pid, inodes) {
				return i, true
			}
		}
	}
	return -1, true
}

// acceptedInode is the inode of the server side of c once a process has
// accepted it (until then the kernel gives it none), polled until limit
// or ctx's end; false where the kernel cannot say (no sock_diag, not TCP)
// or no process accepted c in time.
func acceptedInode(ctx context.Context, c net.Conn, limit time.Duration) (uint64, bool) {
	deadline := time.Now().Add(limit)
	pause := 100 * time.Microsecond
	for {
		ino, found := serverInode(c)
		if !found {
			return 0, false
		}
		if ino != 0 {
			return ino, true
		}
		if time.Now().After(deadline) {
			return 0, false
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, false
		case <-t.C:
		}
		pause = min(2*pause, 5*time.Millisecond)
	}
}

// serverInode is the inode of the socket the server side of the client
// connection c is, from the kernel's socket table (sock_diag): 0 while no
// process has accepted it yet; found is false where c is not TCP or the
// kernel does not know the server side (gone, or no sock_diag).
func serverInode(c net.Conn) (ino uint64, found bool) {
	local, ok1 := addrPort(c.LocalAddr())
	remote, ok2 := addrPort(c.RemoteAddr())
	if !ok1 || !ok2 {
		return 0, false
	}
	// The server's side of the connection: its local address is the one
	// dialled, its remote one the client's.
	ino, err := tcpInode(remote, local)
	if err != nil {
		return 0, false
	}
	return ino, true
}

// warm is Warm with the owner of a connection told by owner, for a pool of
// workers workers (0: owners are never told).
// A pacer, if set, holds the requests to its CPU budget.
func warm(ctx context.Context, w Warmup, workers int, owner func(context.Context, net.Conn, time.Duration) (int, bool), pc *pacer) WarmResult {
	ctx, cancel := context.WithTimeout(ctx, w.Limit)
	defer cancel()
	// No request starts in the last fifth of the limit: those in flight
	// have that long to be answered before the limit counts them failed
	// (a paced warm-up sends few, and each counts).
	sending, stopSending := context.WithTimeout(ctx, w.Limit*4/5)
	defer stopSending()
	var (
		mu      sync.Mutex
		res     WarmResult
		taken   = make([]int, workers)  // connections open per worker
		seen    = make([]bool, workers) // whether the worker had one
		answers = make([]int, workers)
		told    bool
	)
	// count counts one request sent (the first of its connection, if
	// first), answered by worker slot (-1: not known) with status, or
	// failed with err.
	count := func(first bool, slot, status int, err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Sent++
		if first {
			res.Conns++
		}
		switch {
		case err != nil:
			if res.First == nil {
				res.First = err
			}
		case status/100 == 2:
			res.OK++
		default:
			if res.First == nil {
				res.First = fmt.Errorf("GET %s: HTTP %d", w.Path, status)
			}
		}
		if err == nil && slot >= 0 {
			answers[slot]++
		}
	}
	// claim decides about a new connection accepted by worker idx: the
	// slot to keep it in, or -2 where that worker has its share open and
	// another has not, or stray where another process accepted it.
	claim := func(idx int, known bool) (slot int, stray bool) {
		mu.Lock()
		defer mu.Unlock()
		if !known {
			return -1, false
		}
		told = true
		if idx < 0 {
			res.Strays++
			return -1, true
		}
		if taken[idx] >= w.Conns && slices.ContainsFunc(taken, func(n int) bool { return n < w.Conns }) {
			return -2, false
		}
		taken[idx]++
		seen[idx] = true
		return idx, false
	}
	// starving reports whether a worker of the pool has had no connection
	// yet, while the owner of connections can be told.
	starving := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return told && slices.Contains(seen, false)
	}
	// release gives back slot's place once its connection is closed.
	release := func(slot int) {
		if slot < 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		taken[slot]--
	}
	// retake takes slot's place back, for a connection set aside for a
	// replacement that was not found.
	retake := func(slot int) {
		if slot < 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		taken[slot]++
	}
	url := "http://" + w.Addr + w.Path
	if _, err := http.NewRequest(http.MethodGet, url, nil); err != nil {
		res.First = err // a path that makes no request: nothing sent
		return res
	}
	// A cold first request may be slow: that is what the warm-up is for.
	perRequest := min(w.Limit, 10*time.Second)
	var left atomic.Int64
	left.Store(int64(w.Requests))
	conns := max(1, min(w.Conns*max(workers, 1), w.Requests))
	var redials atomic.Int64
	redials.Store(int64(maxRedials * conns))
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			var c *warmConn
			slot := -1
			carried := 0 // requests sent on c
			// old is a connection that has carried its ConnLife, set
			// aside (its place released) until a replacement is green's:
			// closed then, else it carries on. Another process may take
			// every new connection: a warm-up that closed its own would
			// end with requests unsent.
			var old *warmConn
			oldSlot, oldCarried := -1, 0
			drop := func() {
				c.Close()
				c = nil
				release(slot)
				slot = -1
				carried = 0
			}
			// replaced closes old, if any: its replacement is kept.
			replaced := func() {
				if old != nil {
					old.Close()
					old = nil
				}
			}
			// keepOld takes old back: no replacement was found.
			keepOld := func() {
				c, slot, carried = old, oldSlot, oldCarried
				old = nil
				retake(slot)
			}
			defer func() {
				if c != nil {
					drop()
				}
				if old != nil {
					old.Close()
				}
			}()
			for sending.Err() == nil && take(&left) {
				if c == nil {
					var err error
					if c, err = dialWarm(sending, w.Addr); err != nil {
						if sending.Err() != nil {
							left.Add(1) // ended while dialling: nothing was sent
							return
						}
						count(false, -1, 0, err)
						if old != nil {
							keepOld()
						}
						continue
					}
					if owner != nil {
						// The request's first bytes, so that a socket with
						// TCP_DEFER_ACCEPT hands the connection to a process
						// now: its owner is then known before anything
						// that makes a request has been sent.
						if err := c.begin(perRequest); err != nil {
							count(false, -1, 0, err)
							drop()
							if old != nil {
								keepOld()
							}
							continue
						}
						idx, known := owner(sending, c.Conn, perRequest)
						if sending.Err() != nil {
							left.Add(1) // nothing was sent
							return
						}
						var stray bool
						slot, stray = claim(idx, known)
						if stray || slot == -2 {
							// Another process's connection, or one more
							// than this worker's share while another lacks
							// its own: closed before any request, which
							// another connection sends.
							left.Add(1)
							drop()
							if redials.Add(-1) < 0 {
								if old != nil {
									// Out of redials: the connection set
									// aside carries on (a worker that
									// lacks one is dialled for by those
									// that have none).
									keepOld()
									continue
								}
								if !starving() {
									return
								}
								// A worker has had no connection yet: the
								// live pool won every race so far. Dial on,
								// paced, until the time limit.
								pace := time.NewTimer(starvedPace)
								select {
								case <-sending.Done():
								case <-pace.C:
								}
								pace.Stop()
							}
							continue
						}
					}
					replaced()
				}
				if pc != nil {
					pc.wait(sending)
					if sending.Err() != nil {
						left.Add(1) // nothing was sent
						return
					}
				}
				status, keep, err := c.get(ctx, url, perRequest)
				carried++
				count(carried == 1, slot, status, err)
				recycle := w.ConnLife > 0 && carried%w.ConnLife == 0 && redials.Load() > 0
				if err == nil && (!keep || recycle) {
					// The server closes its connections, or the warm-up
					// replaces one: the next one is a new connection, with
					// its own share of redials.
					redials.Add(maxRedials)
				}
				switch {
				case err != nil || !keep:
					drop()
				case recycle:
					// Replaced, as a client that goes away: set aside
					// until the next connection is green's.
					old, oldSlot, oldCarried = c, slot, carried
					c, slot, carried = nil, -1, 0
					release(oldSlot)
				}
			}
		})
	}
	wg.Wait()
	if told {
		res.Workers = answers
	}
	return res
}

// take takes one request from what is left to send, if any; a request
// given back (a stray's) may then be taken by another connection.
func take(left *atomic.Int64) bool {
	if left.Add(-1) >= 0 {
		return true
	}
	left.Add(1)
	return false
}

// warmConn is one keep-alive connection of a warm-up.
type warmConn struct {
	net.Conn
	br    *bufio.Reader
	begun bool // requestStart is sent, and the rest of the request not yet
}

func dialWarm(ctx context.Context, addr string) (*warmConn, error) {
	c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &warmConn{Conn: c, br: bufio.NewReader(c)}, nil
}

// requestStart is what begin sends of a connection's first request: not
// yet a request to any server, which waits for the rest (a live worker
// that gets only this sees a client that went away).
const requestStart = "GET "

// begin sends requestStart, which get then leaves out.
func (c *warmConn) begin(limit time.Duration) error {
	c.SetWriteDeadline(time.Now().Add(limit))
	if _, err := io.WriteString(c.Conn, requestStart); err != nil {
		return fmt.Errorf("the warm-up's connection: %w", err)
	}
	c.begun = true
	return nil
}

// get sends one GET and reads its answer, body included (up to 1 MiB):
// its status, and whether the connection may carry another request.
func (c *warmConn) get(ctx context.Context, url string, limit time.Duration) (status int, keep bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("User-Agent", WarmUserAgent)
	c.SetDeadline(time.Now().Add(limit))
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var buf bytes.Buffer
	if err := req.Write(&buf); err != nil {
		return 0, false, fmt.Errorf("GET %s: %w", req.URL.Path, err)
	}
	b := buf.Bytes()
	if c.begun {
		b, c.begun = bytes.TrimPrefix(b, []byte(requestStart)), false
	}
	if _, err := c.Write(b); err != nil {
		return 0, false, fmt.Errorf("GET %s: %w", req.URL.Path, orCause(ctx, err))
	}
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		return 0, false, fmt.Errorf("GET %s: %w", req.URL.Path, orCause(ctx, err))
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20+1))
	if err != nil {
		return 0, false, fmt.Errorf("GET %s: the answer's body: %w", req.URL.Path, orCause(ctx, err))
	}
	if n > 1<<20 {
		// The rest is not read: closing the body would read all of it (a
		// body that never ends, until the request's time limit).
		c.Close()
	}
	return resp.StatusCode, !resp.Close && n <= 1<<20, nil
}

// orCause is ctx's cause where ctx has ended (a deadline set to stop a
// request says less), else err.
func orCause(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}
