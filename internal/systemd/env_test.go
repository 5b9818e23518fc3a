package systemd

import (
	"slices"
	"testing"
)

func TestChildEnvDropsEverySystemdVariableAndKeepsTheRest(t *testing.T) {
	env := []string{
		"PATH=/usr/bin", "LISTEN_PID=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=a:b",
		"NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=30000000", "WATCHDOG_PID=7",
		"FDSTORE=512", "HOME=/var/lib/deployer", "LISTEN_PIDX=kept", "NOTIFY_SOCKETS=kept",
	}
	got := ChildEnv(env)
	want := []string{"PATH=/usr/bin", "HOME=/var/lib/deployer", "LISTEN_PIDX=kept", "NOTIFY_SOCKETS=kept"}
	if !slices.Equal(got, want) {
		t.Errorf("ChildEnv = %q, want %q", got, want)
	}
	if env[1] != "LISTEN_PID=1" {
		t.Error("ChildEnv modified its argument")
	}
}

func TestSuccessorEnvKeepsNotifySocketAndWatchdogDeadlineOnly(t *testing.T) {
	env := []string{
		"PATH=/usr/bin", "LISTEN_PID=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=a:b",
		"NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=30000000", "WATCHDOG_PID=7", "FDSTORE=512",
	}
	got := SuccessorEnv(env)
	want := []string{"PATH=/usr/bin", "NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=30000000"}
	if !slices.Equal(got, want) {
		t.Errorf("SuccessorEnv = %q, want %q", got, want)
	}
}
