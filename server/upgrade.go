package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/deployer/deployer/internal/buildinfo"
	"github.com/deployer/deployer/internal/systemd"
)

// readyFDEnv names the descriptor on which a daemon started by an upgrade
// says "ok" once it serves.
const readyFDEnv = "DEPLOYER_READY_FD"

// How long an upgrade waits for the work in flight, and for the new daemon.
const (
	handoverWait = 15 * time.Minute
	newDaemonUp  = 2 * time.Minute
)

// Upgrade replaces this daemon with the binary at path ("" = its own
// executable path): checked first (version, check -c), then the handover
// (package doc). It reports whether it handed over: then the caller lets
// Serve return once the answer is out. On failure the old daemon goes on
// and the error says why.
func (s *Server) Upgrade(ctx context.Context, binary string, out io.Writer) (bool, error) {
	if !s.upgrade.TryLock() {
		return false, errors.New("upgrade: another upgrade is running")
	}
	defer s.upgrade.Unlock()
	if binary == "" {
		binary = s.exe
	}
	binary, err := filepath.Abs(binary)
	if err != nil {
		return false, fmt.Errorf("upgrade: %w", err)
	}
	info, err := s.checkBinary(ctx, binary, out)
	if err != nil {
		return false, fmt.Errorf("upgrade refused, nothing changed: %w", err)
	}
	step(out, "Handing over to %s (%s): connections wait in the kernel's queues meanwhile", binary, info.Version)
	s.handOver(out)
	pid, err := s.startNew(binary)
	if err != nil {
		step(out, "The new daemon did not come up (%v): this daemon takes everything back", err)
		s.log.Error("upgrade failed: taking everything back", "err", err)
		if rerr := s.retake(); rerr != nil {
			s.log.Error("taking back after a failed upgrade", "err", rerr)
			return false, fmt.Errorf("upgrade failed: %w; and taking back failed: %w (restart the daemon: the workers still serve)", err, rerr)
		}
		return false, fmt.Errorf("upgrade failed, the old daemon goes on: %w", err)
	}
	// systemd takes the new daemon's messages only once it is the main pid.
	s.notifySystemd(systemd.MainPID(pid) + "\n" + systemd.Ready + "\n" + s.statusLine())
	step(out, "Deployer %s (pid %d) serves; pid %d exits", info.Version, pid, os.Getpid())
	s.log.Info("handed over to a new daemon", "pid", pid, "version", info.Version)
	return true, nil
}

// checkBinary runs the new binary's version and check: it must run, say
// what it is and accept the daemon's config.
func (s *Server) checkBinary(ctx context.Context, binary string, out io.Writer) (buildinfo.Info, error) {
	var info struct {
		Client buildinfo.Info `json:"client"`
	}
	b, err := run(ctx, binary, "version", "--json", "--client")
	if err == nil {
		err = json.Unmarshal(b, &info)
	}
	if err == nil && info.Client.Version == "" {
		err = errors.New("no version in its answer")
	}
	if err != nil {
		return info.Client, fmt.Errorf("%s version: %w: %s", binary, err, lastLine(b))
	}
	step(out, "New binary: deployer %s (commit %.12s, %s)", info.Client.Version, info.Client.Commit, info.Client.GoVersion)
	args := []string{"check"}
	if s.cfg.File != "" {
		args = append(args, "-c", s.cfg.File)
	}
	if b, err := run(ctx, binary, args...); err != nil {
		return info.Client, fmt.Errorf("%s check: %w: %s", binary, err, lastLine(b))
	}
	step(out, "It accepts the config %s", s.cfg.File)
	return info.Client, nil
}

func run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	// Nothing that would make the checked binary think it is socket-
	// activated, notified or the upgrade's successor.
	cmd.Env = slices.DeleteFunc(systemd.ChildEnv(os.Environ()), func(kv string) bool {
		return strings.HasPrefix(kv, readyFDEnv+"=")
	})
	cmd.WaitDelay = 5 * time.Second // a child it left holding the output cannot hold the upgrade
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.b.Bytes(), err
}

// limitedBuffer keeps the first 64 KiB written to it: a checked binary
// cannot fill the daemon's memory with its output.
type limitedBuffer struct{ b bytes.Buffer }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 64<<10 - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// handOver stops taking connections (they queue in the kernel: the keeper
// holds every listener), waits for the pushes and operations in flight,
// then lets go of the apps without stopping a worker.
func (s *Server) handOver(out io.Writer) {
	s.mu.Lock()
	git, sshSrv, adminSrv, ctlLn, d, notify, t := s.git, s.ssh, s.admin, s.ctlLn, s.d, s.notify, s.fds
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), handoverWait)
	defer cancel()
	step(out, "Waiting for the pushes in flight")
	s.log.Info("upgrade: waiting for the pushes in flight")
	if git != nil {
		_ = git.Shutdown(ctx) // closes our copy of the listener only
	}
	if sshSrv != nil {
		_ = sshSrv.Shutdown(ctx)
	}
	stopAdmin(adminSrv) // the keeper holds the listener for the next daemon
	ctlLn.SetUnlinkOnClose(false)
	ctlLn.Close()
	step(out, "Waiting for the operations in flight")
	if err := d.Quiesce(ctx); err != nil {
		s.log.Warn("upgrade: going on with operations still running", "err", err)
	}
	d.Detach()
	notify.Detach()
	if t.keeper != nil {
		t.keeper.Close()
	}
	step(out, "Workers left running for the new daemon")
}

// startNew runs binary serve with the daemon's config and waits until it
// says it serves; it returns its pid. A daemon that fails is killed.
func (s *Server) startNew(binary string) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	args := []string{"serve"}
	if s.cfg.File != "" {
		args = append(args, "-c", s.cfg.File)
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(systemd.SuccessorEnv(os.Environ()), readyFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", binary, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ready := make(chan bool, 1)
	go func() {
		b := make([]byte, 2)
		n, _ := io.ReadFull(r, b)
		ready <- bytes.Equal(b[:n], []byte("ok"))
	}()
	timer := time.NewTimer(newDaemonUp)
	defer timer.Stop()
	select {
	case ok := <-ready:
		if ok {
			return cmd.Process.Pid, nil
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		return 0, fmt.Errorf("it exited: %v", <-exited)
	case <-timer.C:
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		return 0, fmt.Errorf("it did not say it serves within %s", newDaemonUp)
	}
}

// retake takes everything back after a handover that failed, exactly as a
// daemon does after a crash: descriptors from the keeper, workers adopted.
func (s *Server) retake() error {
	if err := s.open(); err != nil {
		return err
	}
	s.writePidFile() // the new daemon may have written its own before it died
	return s.serve()
}
