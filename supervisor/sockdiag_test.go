package supervisor

import (
	"errors"
	"net"
	"net/netip"
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

// The exact lookup tells a connection still in the accept queue (inode 0)
// from the one a process accepted (that socket's inode), for an IPv4
// listener and for a dual-stack one whose connections are IPv4-mapped.
func TestTCPInodeSaysWhoAcceptedTheConnection(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::]:0"} {
		t.Run(addr, func(t *testing.T) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Skipf("listen %s: %v", addr, err)
			}
			defer ln.Close()
			port := ln.Addr().(*net.TCPAddr).Port
			client, err := net.Dial("tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)).String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
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
