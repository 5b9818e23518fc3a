package fdstore

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Client is the daemon's side. It keeps its own copy of everything it Put,
// so that if the keeper dies while the daemon lives, a new keeper is started
// and given everything again.
type Client struct {
	path  string
	start func() error // starts a keeper at path

	mu    sync.Mutex
	conn  *net.UnixConn
	held  map[string]int // our copies of what the keeper holds
	watch *net.UnixConn  // idle connection: EOF on it means the keeper died
	done  bool
	Log   func(msg string, err error) // told about a keeper restart; may be nil
}

// Open connects to the keeper at path, starting one (exe fdstore --socket
// path) if none answers.
func Open(path, exe string) (*Client, error) {
	c := &Client{path: path, held: map[string]int{}}
	c.start = func() error { return startKeeper(exe, path) }
	if err := c.connect(); err != nil {
		if err := c.start(); err != nil {
			return nil, err
		}
		if err := c.connect(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Client) connect() error {
	conn, err := dial(c.path)
	if err != nil {
		return err
	}
	watch, err := dial(c.path)
	if err != nil {
		conn.Close()
		return err
	}
	c.conn, c.watch = conn, watch
	go c.watchKeeper(watch)
	return nil
}

// KeeperPID is the pid of the keeper the client talks to (SO_PEERCRED), 0
// if it cannot tell.
func (c *Client) KeeperPID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return 0
	}
	rc, err := c.conn.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	_ = rc.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

func dial(path string) (*net.UnixConn, error) {
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("fdstore: %w", err)
	}
	return conn, nil
}

// watchKeeper waits for the keeper to go away while the daemon runs, then
// starts a new one and hands it everything again.
func (c *Client) watchKeeper(watch *net.UnixConn) {
	buf := make([]byte, 16)
	for {
		if _, err := watch.Read(buf); err != nil {
			break
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done || c.watch != watch {
		return
	}
	c.conn.Close()
	err := c.start()
	if err == nil {
		err = c.connect()
	}
	if err == nil {
		for name, fd := range c.held {
			if err = c.request("PUT "+name, fd, nil); err != nil {
				break
			}
		}
	}
	if c.Log != nil {
		c.Log("the descriptor keeper stopped; started a new one", err)
	}
}

// Put hands the keeper a copy of fd under name; fd stays the caller's.
func (c *Client) Put(name string, fd int) error {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fdstore: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.held[name]; ok {
		unix.Close(old)
	}
	c.held[name] = dup
	return c.request("PUT "+name, dup, nil)
}

// Del drops name from the keeper.
func (c *Client) Del(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fd, ok := c.held[name]; ok {
		unix.Close(fd)
		delete(c.held, name)
	}
	_ = c.request("DEL "+name, -1, nil)
}

// List takes a copy of everything the keeper holds, by name. The caller
// owns the files. Names listed are also what this client holds from now on.
func (c *Client) List() (map[string]*os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]*os.File{}
	err := c.request("LIST", -1, func(name string, fd int) {
		out[name] = os.NewFile(uintptr(fd), name)
		if dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err == nil {
			if old, ok := c.held[name]; ok {
				unix.Close(old)
			}
			c.held[name] = dup
		}
	})
	if err != nil {
		for _, f := range out {
			f.Close()
		}
		return nil, err
	}
	return out, nil
}

// Quit ends the keeper, closing everything it holds: a graceful stop.
func (c *Client) Quit() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	err := c.request("QUIT", -1, nil)
	c.closeLocked()
	return err
}

// Close disconnects and leaves the keeper running with what it holds: a
// handover to the next daemon.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	c.closeLocked()
}

func (c *Client) closeLocked() {
	c.conn.Close()
	c.watch.Close()
	for name, fd := range c.held {
		unix.Close(fd)
		delete(c.held, name)
	}
}

// request sends one request and reads its reply; each "FD" message of a
// LIST goes to each. The caller holds mu.
func (c *Client) request(msg string, fd int, each func(name string, fd int)) error {
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if _, _, err := c.conn.WriteMsgUnix([]byte(msg), oob, nil); err != nil {
		return fmt.Errorf("fdstore: %w", err)
	}
	buf := make([]byte, 4096)
	rights := make([]byte, unix.CmsgSpace(4*maxFDsPerMessage))
	for {
		n, noob, _, _, err := c.conn.ReadMsgUnix(buf, rights)
		if err != nil {
			return fmt.Errorf("fdstore: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("fdstore: %w", ErrKeeperGone)
		}
		fds := parseRights(rights[:noob])
		reply := string(buf[:n])
		switch {
		case reply == "OK" || reply == "END":
			closeFDs(fds)
			return nil
		case strings.HasPrefix(reply, "ERR "):
			closeFDs(fds)
			return fmt.Errorf("fdstore: %s", strings.TrimPrefix(reply, "ERR "))
		case strings.HasPrefix(reply, "FD ") && len(fds) == 1 && each != nil:
			unix.CloseOnExec(fds[0])
			each(strings.TrimPrefix(reply, "FD "), fds[0])
		default:
			closeFDs(fds)
		}
	}
}

// ErrKeeperGone means the keeper closed the connection.
var ErrKeeperGone = errors.New("the descriptor keeper went away")

// startKeeper runs exe fdstore --socket path in a session of its own, with
// nothing inherited but a pipe on which it says it listens. It is not tied
// to the daemon's life: that is its point.
func startKeeper(exe, path string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("fdstore: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(exe, "fdstore", "--socket", path)
	cmd.ExtraFiles = []*os.File{w}
	cmd.Env = keeperEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("fdstore: start keeper: %w", err)
	}
	go func() { _ = cmd.Wait() }() // reaped if it ends while we run
	ready := make(chan error, 1)
	go func() {
		b := make([]byte, 2)
		n, err := r.Read(b)
		if n > 0 && b[0] == 'o' {
			err = nil
		} else if err == nil {
			err = errors.New("no answer")
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("fdstore: keeper did not start: %w", err)
		}
		return nil
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		return errors.New("fdstore: keeper did not start within 10s")
	}
}

// keeperEnv is a minimal environment: the keeper runs no code but its own.
func keeperEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATH=") || strings.HasPrefix(kv, "GORACE=") {
			env = append(env, kv)
		}
	}
	return env
}

// RunKeeper is the keeper process's main: it listens at path, tells its
// parent through the descriptor ready (if >= 0) that it does, and serves
// until QUIT.
func RunKeeper(path string, ready *os.File) error {
	k, err := Listen(path)
	if err != nil {
		return err
	}
	if ready != nil {
		_, _ = ready.Write([]byte("ok"))
		ready.Close()
	}
	return k.Serve()
}
