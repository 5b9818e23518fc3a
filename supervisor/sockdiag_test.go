package supervisor

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inodeOf is the inode of the socket c is.
func inodeOf(t *testing.T, c net.Conn) uint64 {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

// serverSideIs polls tcpInode for the server side of client until it is
// want, or fails the test.
func serverSideIs(t *testing.T, client net.Conn, want uint64) {
	t.Helper()
	local, _ := addrPort(client.LocalAddr())
	remote, _ := addrPort(client.RemoteAddr())
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := tcpInode(remote, local)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server side of %v: inode %d, err %v; want %d", client.LocalAddr(), got, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dialIPv4 listens on addr and connects to it over IPv4 loopback (to a
// dual-stack listener, an IPv4-mapped connection); both are closed with
// the test.
func dialIPv4(t *testing.T, addr string) (net.Listener, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	client, err := net.Dial("tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return ln, client
}

// The exact lookup tells a connection still in the accept queue (inode 0)
// from the one a process accepted (that socket's inode), for an IPv4
// listener and for a dual-stack one whose connections are IPv4-mapped.
func TestTCPInodeSaysWhoAcceptedTheConnection(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::]:0"} {
		t.Run(addr, func(t *testing.T) {
			ln, client := dialIPv4(t, addr)
			serverSideIs(t, client, 0) // queued, not accepted
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close()
			serverSideIs(t, client, inodeOf(t, server))
		})
	}
}

func TestTCPInodeOfNoConnectionIsNoSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	local := ln.Addr().(*net.TCPAddr).AddrPort()
	nobody := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 1)
	if ino, err := tcpInode(local, nobody); !errors.Is(err, errNoSocket) {
		t.Fatalf("tcpInode of a connection that does not exist: %d, %v; want errNoSocket", ino, err)
	}
}

// An IPv6 listener's connections are found among the IPv6 sockets.
func TestTCPInodeOfAnIPv6Connection(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp6", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	serverSideIs(t, client, 0)
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	serverSideIs(t, client, inodeOf(t, server))
}

// A connection whose server side was accepted and then closed (FIN_WAIT,
// TIME_WAIT: no process holds it any more) is not one still waiting in the
// accept queue: the lookup must not say 0 (which acceptedInode polls on
// until its limit), for a plain and for a dual-stack listener.
func TestTCPInodeOfAConnectionTheServerClosedIsNoSocket(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::]:0"} {
		t.Run(addr, func(t *testing.T) {
			ln, client := dialIPv4(t, addr)
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			serverSideIs(t, client, inodeOf(t, server))
			server.Close() // FIN_WAIT, then TIME_WAIT once the client closes too
			if _, err := client.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("client read after the server closed: %v; want EOF", err)
			}
			local, _ := addrPort(client.LocalAddr())
			remote, _ := addrPort(client.RemoteAddr())
			if ino, err := tcpInode(remote, local); !errors.Is(err, errNoSocket) {
				t.Fatalf("server side closed, client open: inode %d, err %v; want errNoSocket", ino, err)
			}
			// Not polled until its limit (30s), as one still queued is.
			t0 := time.Now()
			if ino, ok := acceptedInode(context.Background(), client, 30*time.Second); ok || time.Since(t0) > 15*time.Second {
				t.Fatalf("acceptedInode of a closed connection: %d, %v after %s; want false before its limit", ino, ok, time.Since(t0))
			}
			client.Close() // the server side goes to TIME_WAIT
			deadline := time.Now().Add(5 * time.Second)
			for {
				ino, err := tcpInode(remote, local)
				if errors.Is(err, errNoSocket) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("server side in TIME_WAIT: inode %d, err %v; want errNoSocket", ino, err)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// Many lookups at once, 8 goroutines, each answer right, and no
// descriptor left behind.
func TestTCPInodeConcurrentAndLeaksNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type pair struct {
		client         net.Conn
		ino, clientIno uint64
	}
	var pairs []pair
	for range 8 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		pairs = append(pairs, pair{c, inodeOf(t, s), inodeOf(t, c)})
	}
	before := openFDs(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for _, p := range pairs {
		wg.Go(func() {
			local, _ := addrPort(p.client.LocalAddr())
			remote, _ := addrPort(p.client.RemoteAddr())
			for range 300 {
				ino, err := tcpInode(remote, local)
				if err != nil || ino != p.ino {
					errs <- errors.New("wrong answer")
					return
				}
				// the client's own side is a different socket
				if ino, err := tcpInode(local, remote); err != nil || ino != p.clientIno {
					errs <- errors.New("client side confused with the server side")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if after := openFDs(t); after > before {
		t.Fatalf("%d descriptors open after 4800 lookups, %d before", after, before)
	}
}
