package supervisor

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
)

// WarmUserAgent is the User-Agent of the warm-up requests, for an app that
// wants to tell them apart (or leave them out of its access log).
const WarmUserAgent = "deployer-warmup"

// Warmup is what Warm sends: GET Path to Addr, Requests in all, over Conns
// keep-alive connections per worker at once, for at most Limit.
type Warmup struct {
	Addr, Path string
	Conns      int
	Requests   int
	Limit      time.Duration
}

// WarmResult is what a warm-up did.
type WarmResult struct {
	// Sent and OK count the requests sent over the connections kept, and
	// those answered 2xx.
	Sent, OK int
	// Workers is how many requests each worker of the pool answered, where
	// the connection's owner could be told; nil where it could not.
	Workers []int
	// Strays counts the connections another process (the live pool)
	// accepted: each was closed after its first answer, which is not
	// counted in Sent.
	Strays int
	// First is the first failure, if any.
	First error
}

// maxRedials bounds, per connection of a warm-up (all its connections
// sharing the bound), how many times a connection that went to the wrong
// process is closed and dialled again.
const maxRedials = 16

// Warm warms the pool up before its cut-over: it sends GET w.Path to the
// live socket at w.Addr until w.Requests have been sent, w.Limit has
// passed or ctx ends. A request that fails is counted, not retried: the
// caller decides what the count means.
//
// On the shared socket a new connection goes to whichever process accepts
// it first, and an idle live pool takes its share. So once a connection
// has had its first answer, Warm asks the kernel (sock_diag) for the
// inode of the socket the server side holds, and keeps the connection
// only if one of this pool's processes holds it, and only while that
// worker has fewer than w.Conns of them; otherwise it closes it and dials
// again (maxRedials times per connection, on average, at most). Every
// worker of the pool then gets its share, however idle the live pool is
// (an idle one takes most new connections). Where the
// owner cannot be told (no sock_diag, a server that closes every
// connection after one answer) the connection is kept.
func (p *Pool) Warm(ctx context.Context, w Warmup) WarmResult {
	return warm(ctx, w, len(p.workers), p.connOwner)
}

// connOwner is the index of the worker of p whose process holds the server
// side of c, or -1; known is false where that cannot be told.
func (p *Pool) connOwner(c net.Conn) (index int, known bool) {
	ino, ok := serverInode(c)
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

// serverInode is the inode of the socket the server accepted for the
// client connection c, from the kernel's socket table (sock_diag): 0 and
// false where c is not TCP, or the server side is gone or not accepted.
func serverInode(c net.Conn) (uint64, bool) {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, false
	}
	// The server's side of the connection: its local address is the one
	// dialled, its remote one the client's.
	s, err := netlink.SocketGet(remote, local)
	if err != nil || s.INode == 0 {
		return 0, false
	}
	return uint64(s.INode), true
}

// warm is Warm with the owner of a connection told by owner, for a pool of
// workers workers (0: owners are never told).
func warm(ctx context.Context, w Warmup, workers int, owner func(net.Conn) (int, bool)) WarmResult {
	ctx, cancel := context.WithTimeout(ctx, w.Limit)
	defer cancel()
	var (
		mu      sync.Mutex
		res     WarmResult
		taken   = make([]int, workers) // connections kept per worker
		answers = make([]int, workers)
		told    bool
	)
	// count counts one request sent, answered by worker slot (-1: not
	// known) with status, or failed with err.
	count := func(slot, status int, err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Sent++
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
	// claim decides about a new connection owned by worker idx: the slot
	// to keep it in, or -2 where that worker has its share and another
	// has not, or stray where another process holds it.
	claim := func(idx int, known bool) (slot int, stray bool) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case !known:
			return -1, false
		case idx < 0:
			res.Strays++
			return -1, true
		}
		told = true
		if taken[idx] >= w.Conns && slices.ContainsFunc(taken, func(n int) bool { return n < w.Conns }) {
			return -2, false
		}
		taken[idx]++
		return idx, false
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
			defer func() {
				if c != nil {
					c.close()
				}
			}()
			slot := -1
			for ctx.Err() == nil && take(&left) {
				if c == nil {
					var err error
					if c, err = dialWarm(ctx, w.Addr); err != nil {
						count(-1, 0, err)
						continue
					}
					slot = -2 // whose it is, is known after its first answer
				}
				status, keep, err := c.get(ctx, url, perRequest)
				if slot == -2 {
					slot = -1
					if err == nil && keep && owner != nil {
						idx, known := owner(c.Conn)
						var stray bool
						slot, stray = claim(idx, known)
						if stray {
							// Another process's connection: its answer is
							// not the pool's.
							left.Add(1)
							c.close()
							c = nil
							if redials.Add(-1) < 0 {
								return
							}
							continue
						}
						if slot == -2 {
							// One more than this worker's share while
							// another lacks its own: count it, dial again.
							count(idx, status, nil)
							c.close()
							c = nil
							if redials.Add(-1) < 0 {
								return
							}
							continue
						}
					}
				}
				count(slot, status, err)
				if err != nil || !keep {
					c.close()
					c = nil
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
	br *bufio.Reader
}

func dialWarm(ctx context.Context, addr string) (*warmConn, error) {
	c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &warmConn{Conn: c, br: bufio.NewReader(c)}, nil
}

func (c *warmConn) close() { c.Conn.Close() }

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
	if err := req.Write(c); err != nil {
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
