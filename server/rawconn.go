package server

import (
	"errors"
	"net"
	"syscall"
)

// rawConn is a listener's raw descriptor access, which unlike
// (*os.File).Fd leaves it non-blocking.
func rawConn(ln net.Listener) (syscall.RawConn, error) {
	switch l := ln.(type) {
	case *net.TCPListener:
		return l.SyscallConn()
	case *net.UnixListener:
		return l.SyscallConn()
	}
	return nil, errors.New("not a TCP or unix listener")
}
