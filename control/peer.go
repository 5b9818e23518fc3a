package control

import (
	"context"
	"net"
	"net/http"
	"os/user"
	"strconv"

	"golang.org/x/sys/unix"
)

type peerKey struct{}

// ConnContext is the control server's http.Server.ConnContext: it keeps the
// credentials of the process at the other end of the socket (SO_PEERCRED),
// for Invoker.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if err != nil || cred == nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, cred)
}

// Invoker names who asked for an operation, for the ledger: the user the
// client's process runs as, by its credentials on the socket, and the
// person the client says it acts for (its SUDO_USER) when that differs:
// "alice (as root)". A client's claim alone is never the whole record.
func Invoker(r *http.Request, claimed string) string {
	cred, ok := r.Context().Value(peerKey{}).(*unix.Ucred)
	if !ok {
		return claimed
	}
	peer := "uid " + strconv.Itoa(int(cred.Uid))
	if u, err := user.LookupId(strconv.Itoa(int(cred.Uid))); err == nil {
		peer = u.Username
	}
	if claimed == "" || claimed == peer {
		return peer
	}
	return claimed + " (as " + peer + ")"
}
