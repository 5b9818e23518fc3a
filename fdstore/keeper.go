package fdstore

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Keeper is the store's side: it holds descriptors by name.
type Keeper struct {
	ln *net.UnixListener

	mu  sync.Mutex
	fds map[string]int
	max int // most names held: the rest of the fd table stays free for LIST and accept
}

// Listen opens the keeper's socket at path, owner-only, replacing a stale
// one.
func Listen(path string) (*Keeper, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("fdstore: %w", err)
	}
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("fdstore: %w", err)
	}
	return &Keeper{ln: ln, fds: map[string]int{}, max: maxEntries()}, nil
}

// maxEntries leaves room under RLIMIT_NOFILE for connections and the copies
// a LIST sends: a full table would make accept fail and LIST send nothing.
func maxEntries() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<20 {
		return 1 << 16
	}
	return max(int(rl.Cur)/2-64, 16)
}

// Serve answers requests until a QUIT, then closes every descriptor held.
func (k *Keeper) Serve() error {
	quit := make(chan struct{})
	var once sync.Once
	go func() {
		<-quit
		k.ln.Close()
	}()
	for {
		c, err := k.ln.AcceptUnix()
		if err != nil {
			select {
			case <-quit:
				k.closeAll()
				return nil
			default:
			}
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOBUFS) ||
				errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.ECONNABORTED) || errors.Is(err, unix.EINTR) {
				// Never exit for a passing error: exiting closes what we hold.
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("fdstore: %w", err)
		}
		if !samePeer(c) {
			c.Close()
			continue
		}
		go func() {
			defer c.Close()
			if k.serveConn(c) {
				once.Do(func() { close(quit) })
			}
		}()
	}
}

// samePeer reports whether the peer runs as our uid.
func samePeer(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return false
	}
	return int(cred.Uid) == os.Getuid()
}

// serveConn answers one client's requests; it reports whether it got QUIT.
func (k *Keeper) serveConn(c *net.UnixConn) bool {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*maxFDsPerMessage))
	for {
		n, noob, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			return false
		}
		fds := parseRights(oob[:noob])
		verb, name, _ := strings.Cut(string(buf[:n]), " ")
		switch verb {
		case "PUT":
			if len(fds) != 1 || !validName(name) {
				closeFDs(fds)
				reply(c, "ERR PUT needs a name and one descriptor", -1)
				continue
			}
			if !k.put(name, fds[0]) {
				unix.Close(fds[0])
				reply(c, "ERR the keeper is full", -1)
				continue
			}
			reply(c, "OK", -1)
		case "DEL":
			closeFDs(fds)
			k.del(name)
			reply(c, "OK", -1)
		case "LIST":
			closeFDs(fds)
			k.list(c)
		case "QUIT":
			closeFDs(fds)
			reply(c, "OK", -1)
			return true
		default:
			closeFDs(fds)
			reply(c, "ERR unknown request", -1)
		}
	}
}

func (k *Keeper) put(name string, fd int) bool {
	unix.CloseOnExec(fd)
	k.mu.Lock()
	defer k.mu.Unlock()
	old, ok := k.fds[name]
	if !ok && k.max > 0 && len(k.fds) >= k.max {
		return false
	}
	if ok {
		unix.Close(old)
	}
	k.fds[name] = fd
	return true
}

func (k *Keeper) del(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if fd, ok := k.fds[name]; ok {
		unix.Close(fd)
		delete(k.fds, name)
	}
}

func (k *Keeper) list(c *net.UnixConn) {
	k.mu.Lock()
	names := make([]string, 0, len(k.fds))
	for n := range k.fds {
		names = append(names, n)
	}
	k.mu.Unlock()
	sort.Strings(names)
	for _, n := range names {
		// One copy at a time, so a DEL racing with the send cannot close
		// what is sent, and a failed copy is said, never skipped silently.
		k.mu.Lock()
		fd, ok := k.fds[n]
		var err error
		if ok {
			fd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		}
		k.mu.Unlock()
		if !ok {
			continue // deleted meanwhile
		}
		if err != nil {
			reply(c, "ERR cannot copy "+n+": "+err.Error(), -1)
			return
		}
		reply(c, "FD "+n, fd)
		unix.Close(fd)
	}
	reply(c, "END", -1)
}

func (k *Keeper) closeAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for n, fd := range k.fds {
		unix.Close(fd)
		delete(k.fds, n)
	}
}

// maxFDsPerMessage bounds the descriptors one message may carry.
const maxFDsPerMessage = 1

func reply(c *net.UnixConn, msg string, fd int) {
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	_, _, _ = c.WriteMsgUnix([]byte(msg), oob, nil)
}

func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// validName is a name without spaces or control characters, as the
// protocol's one-line messages need.
func validName(name string) bool {
	if name == "" || len(name) > 512 {
		return false
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}
