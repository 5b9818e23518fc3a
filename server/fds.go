package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/fdstore"
	"github.com/deployer/deployer/internal/systemd"
	"github.com/deployer/deployer/supervisor"
)

// fds is the daemon's table of descriptors: what it took back from the
// keeper (or socket activation) and has not claimed yet, and the keeper
// that holds a copy of each one in use.
type fds struct {
	keeper  *fdstore.Client // nil: none could be started; nothing outlives the daemon
	dataDir string
	logf    func(msg string, err error)

	mu          sync.Mutex
	kept        map[string]*os.File // taken back, not yet claimed
	fromSystemd map[string]bool     // names systemd passed (socket activation)
}

// openFDs connects to the keeper of dataDir (starting one if none runs) and
// takes back what it holds; then the sockets systemd passed (socket
// activation), matched to wants by name or address, take the place of the
// keeper's copies. wants maps our names to systemd's.
func openFDs(dataDir, exe string, wants map[string]systemd.Want, logf func(msg string, err error)) *fds {
	t := &fds{kept: map[string]*os.File{}, fromSystemd: map[string]bool{}, dataDir: dataDir, logf: logf}
	defer t.activated(wants, logf)
	k, err := fdstore.Open(filepath.Join(dataDir, "fdstore.sock"), exe)
	if err != nil {
		logf("no descriptor keeper: the apps will not outlive this daemon", err)
		return t
	}
	k.Log = logf
	t.keeper = k
	kept, err := k.List()
	if err != nil {
		logf("descriptor keeper", err)
		return t
	}
	t.kept = kept
	return t
}

// take claims a kept descriptor.
func (t *fds) take(name string) *os.File {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.kept[name]
	delete(t.kept, name)
	return f
}

// put hands the keeper a copy of fd under name, and systemd's descriptor
// store one too when the daemon runs under systemd (unless systemd passed
// it: it passes that one again anyway).
func (t *fds) put(name string, fd int) error {
	if underSystemd() && !t.fromSystemd[name] {
		_ = systemd.StoreFDs(name, fd) // best effort: the keeper is the store we rely on
	}
	if t.keeper == nil {
		return nil
	}
	return t.keeper.Put(name, fd)
}

// del drops name from the keeper (and systemd's store).
func (t *fds) del(name string) {
	if underSystemd() && !t.fromSystemd[name] {
		_ = systemd.RemoveFDs(name)
	}
	if t.keeper != nil {
		t.keeper.Del(name)
	}
}

// underSystemd says whether systemd supervises the daemon (and may keep its
// descriptors: FileDescriptorStoreMax= in the unit).
func underSystemd() bool { return os.Getenv("NOTIFY_SOCKET") != "" }

// releaseUnclaimed drops what nobody claimed once the apps are up: pipes of
// workers that were not adopted, sockets of addresses no longer configured.
func (t *fds) releaseUnclaimed() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var names []string
	for name, f := range t.kept {
		f.Close()
		t.del(name)
		names = append(names, name)
		delete(t.kept, name)
	}
	return names
}

// output is the kept output pipe of worker pid of app, if any.
func (t *fds) output(app string, pid int) *os.File {
	return t.take(supervisor.OutputName(app, pid))
}

// appSocketName is the keeper's name for app's socket on addr.
func appSocketName(app, addr string) string { return "app/" + app + "/" + addr }

// appSocket takes app's listen address i back from systemd or the keeper,
// or opens it, and has the keeper hold it.
func (t *fds) appSocket(app string, i int, addr string) (*supervisor.Socket, error) {
	name := appSocketName(app, addr)
	fdName := fmt.Sprintf("%s-%d", app, i)
	var s *supervisor.Socket
	if f := t.take(name); f != nil {
		var err error
		if s, err = supervisor.SocketFromFile(f, addr, fdName); err != nil {
			return nil, err
		}
	} else {
		var err error
		if s, err = t.openAppSocket(app, i, addr, fdName); err != nil {
			return nil, err
		}
	}
	var perr error
	if err := s.Control(func(fd int) { perr = t.put(name, fd) }); err != nil || perr != nil {
		s.Close()
		return nil, fmt.Errorf("keep %s: %w", name, errors.Join(err, perr))
	}
	s.OnClose = func() { t.del(name) }
	return s, nil
}

// listener takes the TCP listener name back if it is bound to addr, or
// opens addr, and has the keeper hold it.
func (t *fds) listener(name, addr string) (net.Listener, error) {
	var ln net.Listener
	if f := t.take(name); f != nil {
		l, err := net.FileListener(f)
		f.Close()
		if err == nil && sameAddr(l.Addr().String(), addr) {
			ln = l
		} else if err == nil {
			l.Close() // the config names another address now
		}
	}
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, err
		}
	}
	if err := t.keep(name, ln); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// keep hands the keeper a copy of ln's descriptor.
func (t *fds) keep(name string, ln net.Listener) error {
	rc, err := rawConn(ln)
	if err != nil {
		return err
	}
	var perr error
	if err := rc.Control(func(fd uintptr) { perr = t.put(name, int(fd)) }); err != nil {
		return err
	}
	return perr
}

// sameAddr compares a bound address with a configured one, where a
// configured empty or wildcard host matches any.
func sameAddr(bound, configured string) bool {
	bh, bp, err1 := net.SplitHostPort(bound)
	ch, cp, err2 := net.SplitHostPort(configured)
	if err1 != nil || err2 != nil || bp != cp {
		return false
	}
	if ch == "" || ch == "0.0.0.0" || ch == "::" {
		return bh == "0.0.0.0" || bh == "::"
	}
	if ch == "localhost" {
		return bh == "127.0.0.1" || bh == "::1"
	}
	return strings.EqualFold(bh, ch)
}

// activated takes the sockets systemd passed this process, if any.
func (t *fds) activated(wants map[string]systemd.Want, logf func(msg string, err error)) {
	inherited, err := systemd.Listeners()
	if err != nil {
		logf("socket activation", err)
		return
	}
	if len(inherited) == 0 {
		return
	}
	var list []systemd.Want
	ours := map[string]string{}
	for name, w := range wants {
		list = append(list, w)
		ours[w.Name] = name
	}
	found, unclaimed := systemd.Match(inherited, list)
	for sdName, in := range found {
		name := ours[sdName]
		if old := t.kept[name]; old != nil {
			old.Close() // the keeper's copy of the same socket
		}
		t.kept[name] = in.File()
		t.fromSystemd[name] = true
	}
	for _, in := range unclaimed {
		if ourName(in.Name) {
			// From systemd's descriptor store, under our own name.
			if old := t.kept[in.Name]; old != nil {
				old.Close()
			}
			t.kept[in.Name] = in.File()
			continue
		}
		logf("socket activation: a socket nobody configured: "+in.String(), nil)
		in.Close()
	}
}

// ourName reports whether name is one the daemon stores descriptors under.
func ourName(name string) bool {
	switch name {
	case "git-http", "git-ssh", "control", "notify", "admin-http":
		return true
	}
	return strings.HasPrefix(name, "app/") || strings.HasPrefix(name, "out/")
}

// openAppSocket opens app's listen address i. If running workers hold the
// address (the keeper that held its copy died while no daemon ran), the
// socket is taken back from one of them; failing that, the address is
// retried for a while, for workers that are going away.
func (t *fds) openAppSocket(app string, i int, addr, fdName string) (*supervisor.Socket, error) {
	s, err := supervisor.ListenSocket(addr, fdName, 0)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return s, err
	}
	if recs := deployer.RecordedWorkers(t.dataDir, app); len(recs) > 0 {
		s, werr := supervisor.SocketFromWorkers(recs, app, addr, fdName)
		if werr == nil {
			return s, nil
		}
		t.logf("the address is held by workers, and taking it back from them failed", werr)
	}
	return supervisor.ListenSocket(addr, fdName, 10*time.Second)
}
