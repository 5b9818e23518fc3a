package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// probeTCP connects to addr and waits until the worker has accepted the
// connection. A bare connect would prove nothing: the kernel completes it
// into the accept queue of a socket the daemon holds, whether or not any
// worker accepts. So the probe watches that queue (the listening socket's
// rx_queue in /proc/net/tcp) drain.
func probeTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	for {
		q, err := acceptQueue(p)
		if err != nil {
			return err
		}
		if q == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("connected, but no worker accepted the connection")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// acceptQueue is the number of connections waiting to be accepted on the
// listening socket of local port p.
func acceptQueue(p int) (int, error) {
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st tx_queue:rx_queue ...
			if len(fields) < 5 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if lp, err := strconv.ParseInt(hexPort, 16, 32); !ok || err != nil || int(lp) != p {
				continue
			}
			_, rx, _ := strings.Cut(fields[4], ":")
			n, err := strconv.ParseInt(rx, 16, 64)
			f.Close()
			return int(n), err
		}
		f.Close()
	}
	return 0, fmt.Errorf("no listening socket on port %d", p)
}

// commandTimeout caps one run of the health command, whatever the probe's
// Timeout: a command that hangs this long is itself a failed check.
const commandTimeout = 10 * time.Second

// probeCommand runs the health command; exit 0 is healthy.
//
// A run still in progress when ctx ends is killed, and its "signal: killed"
// is no verdict on the worker: that error wraps ctx.Err(), so the caller can
// tell it from a run that finished and keep what the last finished run said.
func probeCommand(ctx context.Context, p Probe, addr string) error {
	runCtx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(runCtx, "/bin/sh", "-c", p.Command)
	cmd.Dir = p.Dir
	cmd.Env = p.Account.Env(append(append([]string(nil), p.Env...), "DEPLOYER_HEALTH_ADDR="+addr))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: p.Account.Credential()}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	// The shell exiting with a status is a finished run, even if ctx ended
	// just after; anything else with runCtx done means it was cut.
	finished := cmd.ProcessState != nil && cmd.ProcessState.Exited()
	if !finished && ctx.Err() != nil {
		return fmt.Errorf("health command: cut off while running: %w", ctx.Err())
	}
	msg := strings.TrimSpace(string(out))
	if len(msg) > 200 {
		msg = msg[len(msg)-200:]
	}
	if !finished && runCtx.Err() != nil {
		return fmt.Errorf("health command: no exit within %s (%w): %s", commandTimeout, err, msg)
	}
	return fmt.Errorf("health command: %w: %s", err, msg)
}
