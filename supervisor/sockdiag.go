package supervisor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// The kernel's socket table (sock_diag, netlink), asked about one TCP
// connection by its addresses: an exact lookup, a hash probe in the kernel.
// A dump request (what general netlink libraries send) walks every TCP hash
// bucket instead: it was a fifth of the daemon's CPU in a warm-up, taken
// from the live workers (docs/BENCHMARKS.md).

// Sizes and offsets of struct inet_diag_req_v2 and struct inet_diag_msg
// (linux/inet_diag.h), both around struct inet_diag_sockid.
const (
	diagSockIDLen = 48                     // sport, dport, src[16], dst[16], if, cookie[2]
	diagReqLen    = 8 + diagSockIDLen      // family, protocol, ext, pad, states, id
	diagMsgInode  = 4 + diagSockIDLen + 16 // family..retrans, id, expires, rqueue, wqueue, uid
)

// States of a TCP socket (include/net/tcp_states.h): a listening one, and
// those of a connection that may still wait in a listener's accept queue
// (with no file, so inode 0): the handshake done or not, the client gone.
const (
	tcpEstablished = 1
	tcpSynRecv     = 3
	tcpCloseWait   = 8
	tcpListen      = 10
)

// errNoSocket means the kernel has no socket with those addresses.
var errNoSocket = errors.New("no such socket")

// tcpInode is the inode of the TCP socket whose local address is local and
// remote address is remote: 0 while it has no file (a connection still in
// a listener's accept queue), errNoSocket if there is none, or none a
// process can hold any more (accepted, then closed). An IPv4 pair
// is looked for among IPv4 sockets, then as IPv4-mapped among IPv6 ones (a
// dual-stack listener's connections).
func tcpInode(local, remote netip.AddrPort) (uint64, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
	if err != nil {
		return 0, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag: %w", err)
	}
	l, r := local.Addr().Unmap(), remote.Addr().Unmap()
	if l.Is4() && r.Is4() {
		ino, err := diagExact(fd, unix.AF_INET, l, r, local.Port(), remote.Port())
		if !errors.Is(err, errNoSocket) {
			return ino, err
		}
		l, r = netip.AddrFrom16(l.As16()), netip.AddrFrom16(r.As16())
	}
	return diagExact(fd, unix.AF_INET6, l, r, local.Port(), remote.Port())
}

// diagExact sends one exact sock_diag request on fd and reads its answer.
func diagExact(fd int, family uint8, local, remote netip.Addr, lport, rport uint16) (uint64, error) {
	req := make([]byte, unix.NLMSG_HDRLEN+diagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST) // no NLM_F_DUMP: one socket, looked up
	ne.PutUint32(req[8:], 1)                  // sequence
	b := req[unix.NLMSG_HDRLEN:]
	b[0], b[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(b[4:], 0xffffffff) // any state
	id := b[8:]
	binary.BigEndian.PutUint16(id[0:], lport)
	binary.BigEndian.PutUint16(id[2:], rport)
	putDiagAddr(id[4:20], local)
	putDiagAddr(id[20:36], remote)
	ne.PutUint32(id[40:], 0xffffffff) // INET_DIAG_NOCOOKIE
	ne.PutUint32(id[44:], 0xffffffff)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag: %w", err)
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("sock_diag: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return 0, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return 0, errors.New("sock_diag: short error")
				}
				errno := -int32(ne.Uint32(m.Data))
				if errno == 0 {
					continue // an acknowledgement
				}
				if unix.Errno(errno) == unix.ENOENT {
					return 0, errNoSocket
				}
				return 0, fmt.Errorf("sock_diag: %w", unix.Errno(errno))
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(m.Data) < diagMsgInode+4 {
					return 0, errors.New("sock_diag: short answer")
				}
				// The kernel's lookup falls back to the listener of the
				// local address when no connection matches: that is not
				// the socket asked about.
				if m.Data[1] == tcpListen || binary.BigEndian.Uint16(m.Data[4+2:]) != rport {
					return 0, errNoSocket
				}
				ino := uint64(ne.Uint32(m.Data[diagMsgInode:]))
				if ino == 0 {
					switch m.Data[1] {
					case tcpEstablished, tcpSynRecv, tcpCloseWait:
					default:
						// Closed by the process that accepted it
						// (FIN_WAIT, TIME_WAIT...): no file, and never one
						// again, unlike a connection still queued.
						return 0, errNoSocket
					}
				}
				return ino, nil
			}
		}
	}
}

// putDiagAddr writes a into a 16-byte idiag_src or idiag_dst: an IPv4
// address in its first 4 bytes.
func putDiagAddr(dst []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(dst, v[:])
		return
	}
	v := a.As16()
	copy(dst, v[:])
}

// addrPort is a's address and port, if it is TCP.
func addrPort(a net.Addr) (netip.AddrPort, bool) {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	return t.AddrPort(), true
}
