package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deployer/deployer/admin"
	"github.com/deployer/deployer/admin/statuspage"
	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/control"
	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/fleet"
	"github.com/deployer/deployer/hooks"
	"github.com/deployer/deployer/hooks/gitserver"
	"github.com/deployer/deployer/internal/buildinfo"
	"github.com/deployer/deployer/internal/cgroup"
	"github.com/deployer/deployer/internal/systemd"
	"github.com/deployer/deployer/supervisor"
	"github.com/gliderlabs/ssh"
	"golang.org/x/sys/unix"
)

// ErrServerClosed is what Serve returns after Shutdown or a handover to a
// new daemon.
var ErrServerClosed = errors.New("server closed")

// Server is the daemon.
type Server struct {
	cfg     *config.Config
	log     *slog.Logger
	exe     string
	started time.Time

	mu      sync.Mutex // guards the fields below, which a failed upgrade replaces
	fds     *fds
	d       *deployer.Daemon
	ready   chan struct{} // closed once the apps are up (or adopted)
	ctl     *http.Server
	ctlLn   *net.UnixListener
	git     *http.Server
	gitLn   net.Listener
	ssh     *ssh.Server
	sshLn   net.Listener
	admin   *http.Server // nil: http_admin.listen is not set
	adminLn net.Listener
	// adminHandler serves admin; Reconfigure changes its auth settings.
	adminHandler *admin.Handler

	// metrics outlive a failed upgrade's new deployer.Daemon: they are
	// made once, before the first, and fed by every one (Options.OnEvent).
	metrics  *admin.Metrics
	page     *statuspage.Page // the status page, told of ledger events as the metrics are
	stopping atomic.Bool      // Shutdown began: /healthz says 503

	notify  *supervisor.Notifier
	cgroups *cgroup.Tree // nil: process groups only
	// readyPipe is where an upgrading daemon waits for "ok"; nil if none.
	readyPipe *os.File
	done      chan struct{} // closed when Serve must return
	once      sync.Once
	upgrade   sync.Mutex // one upgrade at a time

	transportMu sync.Mutex
	transport   http.RoundTripper // to the fleet's peers, for transportCA
	transportCA string
}

// New prepares the daemon: data_dir, the git hook scripts, every
// descriptor (taken back from the keeper where a previous daemon left
// them) and the apps. No worker starts and nothing is served before Serve.
func New(cfg *config.Config, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary: %w", err)
	}
	s := &Server{cfg: cfg, log: log, exe: exe, started: time.Now(), done: make(chan struct{}), readyPipe: takeReadyPipe()}
	s.metrics = admin.NewMetrics(currentDaemon{s})
	s.metrics.AddApps(cfg.AppNames()...)
	s.page = statuspage.New(currentDaemon{s}, statuspage.Options{Log: log})
	// Nothing the daemon starts inherits what its own parent left open.
	supervisor.CloseOnExecInherited()
	if err := s.installHooks(); err != nil {
		return nil, err
	}
	if s.cgroups, err = cgroup.Open(cfg.DataDir); err != nil {
		log.Warn("builds, hooks and workers run in process groups only: a process that leaves its group can outlive them", "err", err)
	} else {
		log.Info("builds, hooks and workers each run in a cgroup of their own", "cgroup", s.cgroups.Dir())
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

// enableLimits turns on the cgroup controllers the apps' limits need, and
// says in the log, naming the apps, which limits are not enforced and why.
// Starting never fails for it.
func (s *Server) enableLimits(cfg *config.Config, t *fds) {
	var need []string
	var apps []string
	for _, name := range cfg.AppNames() {
		l := cfg.Apps[name].Limits
		if !l.Any() {
			continue
		}
		apps = append(apps, name)
		for _, c := range (cgroup.Limits{Memory: int64(l.Memory), Pids: l.Pids, CPU: l.CPUs()}).Controllers() {
			if !slices.Contains(need, c) {
				need = append(need, c)
			}
		}
	}
	if len(need) == 0 {
		return
	}
	if s.cgroups == nil {
		s.log.Warn("limits not enforced: no writable cgroup v2", "apps", strings.Join(apps, ","))
		return
	}
	ours := []int{os.Getpid()}
	if t != nil && t.keeper != nil {
		ours = append(ours, t.keeper.KeeperPID())
	}
	if err := s.cgroups.Enable(need, ours); err != nil {
		s.log.Warn("limits not enforced", "apps", strings.Join(apps, ","), "err", err)
		return
	}
	s.log.Info("limits enforced", "apps", strings.Join(apps, ","), "controllers", strings.Join(need, ","))
}

func (s *Server) hookDir() string { return filepath.Join(s.cfg.DataDir, "hooks") }
func (s *Server) socket() string  { return filepath.Join(s.cfg.DataDir, "deployer.sock") }
func (s *Server) pidFile() string { return filepath.Join(s.cfg.DataDir, "deployer.pid") }

func (s *Server) installHooks() error {
	if err := os.MkdirAll(s.hookDir(), 0o700); err != nil {
		return fmt.Errorf("hooks dir: %w", err)
	}
	for _, h := range hooks.Hooks {
		if err := os.WriteFile(filepath.Join(s.hookDir(), h), []byte(hooks.HookScript(s.exe, h)), 0o700); err != nil {
			return fmt.Errorf("write hook: %w", err)
		}
	}
	return nil
}

// open takes every descriptor back from the keeper or opens it, and opens
// the apps. On error everything it opened is closed again (and the keeper
// keeps its copies).
func (s *Server) open() (err error) {
	t := openFDs(s.cfg.DataDir, s.exe, s.wants(), func(msg string, err error) {
		if err != nil {
			s.log.Error(msg, "err", err)
		} else {
			s.log.Warn(msg)
		}
	})
	var closers []func()
	defer func() {
		if err != nil {
			for _, c := range closers {
				c()
			}
			if t.keeper != nil {
				t.keeper.Close()
			}
		}
	}()
	ctl, err := s.controlListener(t)
	if err != nil {
		return err
	}
	closers = append(closers, func() { ctl.SetUnlinkOnClose(false); ctl.Close() })
	notify, err := s.notifySocket(t)
	if err != nil {
		return err
	}
	closers = append(closers, notify.Detach)
	var gitLn, sshLn net.Listener
	if s.cfg.Git.HTTPListen != "" {
		if gitLn, err = t.listener("git-http", s.cfg.Git.HTTPListen); err != nil {
			return fmt.Errorf("git.http_listen: %w", err)
		}
		closers = append(closers, func() { gitLn.Close() })
	}
	if s.cfg.Git.SSHListen != "" {
		if sshLn, err = t.listener("git-ssh", s.cfg.Git.SSHListen); err != nil {
			return fmt.Errorf("git.ssh_listen: %w", err)
		}
		closers = append(closers, func() { sshLn.Close() })
	}
	var adminLn net.Listener
	if s.cfg.HTTPAdmin.Listen != "" {
		if adminLn, err = t.listener("admin-http", s.cfg.HTTPAdmin.Listen); err != nil {
			return fmt.Errorf("http_admin.listen: %w", err)
		}
		closers = append(closers, func() { adminLn.Close() })
	}
	s.enableLimits(s.cfg, t)
	d, err := deployer.New(s.cfg, s.log, deployer.Options{
		Socket: t.appSocket, Notify: notify, Keeper: keeperOf(t), Output: t.output, Cgroups: s.cgroups,
		Peers: fleetPeers{s}, OnEvent: s.onEvent,
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fds, s.d, s.notify = t, d, notify
	s.ctlLn, s.gitLn, s.sshLn, s.adminLn = ctl, gitLn, sshLn, adminLn
	s.ready = make(chan struct{})
	return nil
}

// wants are the sockets socket activation may pass, by our names: SPEC §8's
// FileDescriptorName= values, else matched by address.
func (s *Server) wants() map[string]systemd.Want {
	w := map[string]systemd.Want{"control": {Name: systemd.NameControl, Addr: s.socket()}}
	if s.cfg.Git.HTTPListen != "" {
		w["git-http"] = systemd.Want{Name: systemd.NameGitHTTP, Addr: s.cfg.Git.HTTPListen}
	}
	if s.cfg.Git.SSHListen != "" {
		w["git-ssh"] = systemd.Want{Name: systemd.NameGitSSH, Addr: s.cfg.Git.SSHListen}
	}
	if s.cfg.HTTPAdmin.Listen != "" {
		w["admin-http"] = systemd.Want{Name: systemd.NameAdmin, Addr: s.cfg.HTTPAdmin.Listen}
	}
	for _, name := range s.cfg.AppNames() {
		for i, addr := range s.cfg.Apps[name].Listen {
			w[appSocketName(name, addr)] = systemd.Want{Name: systemd.AppName(name, i), Addr: addr}
		}
	}
	return w
}

// keeperOf is t's keeper as the apps want it, or nil.
func keeperOf(t *fds) supervisor.FDKeeper {
	if t.keeper == nil {
		return nil
	}
	return t.keeper
}

func (s *Server) controlListener(t *fds) (*net.UnixListener, error) {
	if f := t.take("control"); f != nil {
		ln, err := net.FileListener(f)
		f.Close()
		if ul, ok := ln.(*net.UnixListener); err == nil && ok {
			if _, serr := os.Stat(s.socket()); serr == nil {
				return ul, nil // still bound at its path: the kept copy serves
			}
			ul.Close()
		}
	}
	ln, err := control.ListenControl(s.socket())
	if err != nil {
		return nil, err
	}
	ul := ln.(*net.UnixListener)
	if err := t.keep("control", ul); err != nil {
		ul.Close()
		return nil, err
	}
	return ul, nil
}

func (s *Server) notifySocket(t *fds) (*supervisor.Notifier, error) {
	n, err := s.openNotify(t)
	if err == nil {
		_ = os.Chmod(n.Path(), 0o622) // one an older daemon made owner-only
	}
	if err == nil && s.cgroups != nil {
		n.OnlyFrom(s.cgroups.Path()) // the apps' processes, and no other
	}
	return n, err
}

func (s *Server) openNotify(t *fds) (*supervisor.Notifier, error) {
	path := filepath.Join(s.cfg.DataDir, "notify.sock")
	if f := t.take("notify"); f != nil {
		if _, err := os.Stat(path); err == nil {
			if n, err := supervisor.NotifierFromFile(f, path); err == nil {
				return n, nil
			}
		} else {
			f.Close()
		}
	}
	n, err := supervisor.ListenNotify(path)
	if err != nil {
		return nil, err
	}
	var perr error
	if err := n.Control(func(fd int) { perr = t.put("notify", fd) }); err != nil || perr != nil {
		n.Close()
		return nil, fmt.Errorf("keep the notify socket: %w", errors.Join(err, perr))
	}
	return n, nil
}

// Serve serves git and the control socket and brings the apps up (adopting
// the workers a previous daemon left), then blocks until Shutdown or a
// handover to a new daemon; either way it returns ErrServerClosed.
func (s *Server) Serve() error {
	// Before serve, which says "ok" to an upgrading daemon: clients take a
	// pid file naming a dead process for "the daemon is not running".
	s.writePidFile()
	if err := s.serve(); err != nil {
		return err
	}
	go s.watchdog()
	s.log.Info("deployer started", "pid", os.Getpid(), "version", buildinfo.Get().Version,
		"git_http", s.cfg.Git.HTTPListen, "git_ssh", s.cfg.Git.SSHListen, "admin", s.cfg.HTTPAdmin.Listen, "socket", s.socket(),
		"data_dir", s.cfg.DataDir, "config", s.cfg.File)
	if len(s.cfg.Apps) == 0 {
		s.log.Info("no apps configured: add one under apps: in deployer.yaml (see README), then send SIGHUP")
	}
	<-s.done
	return ErrServerClosed
}

// writePidFile names this process in data_dir/deployer.pid.
func (s *Server) writePidFile() {
	if err := os.WriteFile(s.pidFile(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		s.log.Error("pid file", "err", err)
	}
}

// serve starts the servers on the listeners open() got and brings the apps
// up in the background; ready is closed once they are.
func (s *Server) serve() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.d
	s.ctl = &http.Server{Handler: s.controlHandler(d), ConnContext: control.ConnContext}
	go s.ctl.Serve(s.ctlLn)
	limits := gitserver.Limits{
		MaxConns: s.cfg.Git.MaxConnections, Handshake: s.cfg.Git.HandshakeTimeout,
		Idle: s.cfg.Git.IdleTimeout, Stall: s.cfg.Git.StallTimeout,
	}
	if s.gitLn != nil {
		s.git = (&gitserver.HTTP{
			Apps: d, Tokens: gitserver.Tokens{File: s.cfg.Git.TokensFile}, Socket: s.socket(), HookDir: s.hookDir(),
			MaxPack: int64(s.cfg.Git.MaxPackSize), Log: s.log, AuthDelay: 300 * time.Millisecond, Limits: limits,
		}).Server()
		if _, err := s.cfg.Fleet.Token(); err != nil {
			s.log.Error("fleet: peers cannot reach this host", "err", err)
		}
		// A peer's request, once authenticated, keeps its connection as a
		// push does: a rollout's step streams for minutes.
		api := s.fleetPeerAPI(d)
		busy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer gitserver.Busy(r.Context())()
			api.ServeHTTP(w, r)
		})
		guard := fleet.Guard(s.fleetToken, busy, s.git.Handler)
		s.git.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/_fleet/") && !fleet.Authorized(r, s.fleetToken()) {
				// As a push's failed authentication: logged, and slowed
				// down so that guessing costs.
				s.log.Warn("fleet: refused a request without the fleet token", "peer", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
				time.Sleep(300 * time.Millisecond)
			}
			guard.ServeHTTP(w, r)
		})
		go s.serveGit(s.git, gitserver.NewListener(s.gitLn, limits, s.log, "git http"))
		if s.cfg.Git.TokensFile == "" {
			s.log.Warn("git.tokens_file is not set: every HTTP push will be refused")
		}
	}
	if s.sshLn != nil {
		hostKey := s.cfg.Git.SSHHostKey
		if hostKey == "" {
			hostKey = filepath.Join(s.cfg.DataDir, "ssh_host_ed25519_key")
		}
		srv, err := (&gitserver.SSH{
			Apps: d, AuthorizedKeys: s.cfg.Git.AuthorizedKeys, Socket: s.socket(), HookDir: s.hookDir(),
			MaxPack: int64(s.cfg.Git.MaxPackSize), Log: s.log, AuthDelay: 300 * time.Millisecond, Limits: limits,
		}).Server(hostKey)
		if err != nil {
			return fmt.Errorf("git.ssh_listen: %w", err)
		}
		s.ssh = srv
		go func(ln net.Listener) {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, ssh.ErrServerClosed) {
				s.log.Error("git ssh", "err", err)
			}
		}(gitserver.NewListener(s.sshLn, limits, s.log, "git ssh"))
		if s.cfg.Git.AuthorizedKeys == "" {
			s.log.Warn("git.authorized_keys is not set: every SSH push will be refused")
		}
	}
	s.serveAdmin()
	ready, t := s.ready, s.fds
	go func() {
		d.Start()
		for _, name := range t.releaseUnclaimed() {
			s.log.Info("released a descriptor nobody claims any more", "name", name)
		}
		close(ready)
		s.announceReady()
	}()
	return nil
}

func (s *Server) serveGit(srv *http.Server, ln net.Listener) {
	var err error
	if s.cfg.Git.TLSCert != "" {
		err = srv.ServeTLS(ln, s.cfg.Git.TLSCert, s.cfg.Git.TLSKey)
	} else {
		err = srv.Serve(ln)
	}
	if !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("git http", "err", err)
	}
}

// announceReady tells whoever waits that the daemon serves: the old daemon
// of an upgrade (DEPLOYER_READY_FD), and systemd.
func (s *Server) announceReady() {
	if s.readyPipe != nil {
		_, _ = s.readyPipe.Write([]byte("ok"))
		s.readyPipe.Close()
		s.readyPipe = nil
	}
	s.notifySystemd(systemd.Ready + "\n" + s.statusLine())
}

// takeReadyPipe takes the descriptor an upgrading daemon passed
// (DEPLOYER_READY_FD), if it is one: a pipe. Anything else named there is
// left alone, so a stray variable cannot make the daemon write to or close
// a descriptor it uses for something else.
func takeReadyPipe() *os.File {
	v, ok := os.LookupEnv(readyFDEnv)
	os.Unsetenv(readyFDEnv)
	if !ok {
		return nil
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return nil
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "ready")
}

// daemon is the current deployer.Daemon: a failed upgrade replaces it.
func (s *Server) daemon() (*deployer.Daemon, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.d, s.ready
}

// Reload starts fresh workers of every app (SIGUSR2).
func (s *Server) Reload(by string) {
	d, ready := s.daemon()
	<-ready
	s.notifySystemd(systemd.Reloading())
	if err := d.Reload(context.Background(), "", by, io.Discard); err != nil {
		s.log.Error("reload", "err", err)
	}
	s.notifySystemd("READY=1\n" + s.statusLine())
}

// Reconfigure applies a new configuration (SIGHUP).
func (s *Server) Reconfigure(next *config.Config) error {
	d, ready := s.daemon()
	<-ready
	s.notifySystemd(systemd.Reloading())
	defer func() { s.notifySystemd("READY=1\n" + s.statusLine()) }()
	s.mu.Lock()
	t := s.fds
	s.mu.Unlock()
	s.enableLimits(next, t)
	if err := d.Reconfigure(next); err != nil {
		return err
	}
	s.metrics.AddApps(next.AppNames()...)
	s.mu.Lock()
	prev := s.cfg
	s.cfg = next
	s.mu.Unlock()
	s.reconfigureAdmin(prev.HTTPAdmin, next.HTTPAdmin)
	return nil
}

// Shutdown stops the daemon for good: no more connections, running
// operations finish (until ctx ends), every worker drains, the keeper ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	git, sshSrv, adminSrv, ctl, ctlLn, t, d, ready := s.git, s.ssh, s.admin, s.ctl, s.ctlLn, s.fds, s.d, s.ready
	s.mu.Unlock()
	s.stopping.Store(true)
	s.notifySystemd(systemd.Stopping)
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if git != nil {
		git.Shutdown(gctx)
	}
	if sshSrv != nil {
		sshSrv.Shutdown(gctx)
	}
	cancel()
	<-ready
	err := d.Shutdown(ctx)
	// The admin listener answers until the workers drained: /healthz
	// says 503 meanwhile, and the last scrapes see the drain.
	stopAdmin(adminSrv)
	activated := t.fromSystemd["control"] // the socket unit's path is systemd's
	ctlLn.SetUnlinkOnClose(!activated)
	if ctl != nil {
		ctl.Close()
	}
	ctlLn.Close()
	if t.keeper != nil {
		if qerr := t.keeper.Quit(); qerr != nil {
			s.log.Error("descriptor keeper", "err", qerr)
		}
	}
	if !activated {
		os.Remove(s.socket())
	}
	os.Remove(s.pidFile())
	if s.cgroups != nil {
		s.cgroups.Prune()
	}
	s.log.Info("stopped")
	s.once.Do(func() { close(s.done) })
	return err
}
