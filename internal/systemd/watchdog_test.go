package systemd

import (
	"os"
	"strconv"
	"testing"
	"time"
)

func TestWatchdogIntervalAppliesOnlyToThePidSystemdNamed(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	other := strconv.Itoa(os.Getppid())
	for _, tc := range []struct {
		name      string
		usec, pid string // "-" = unset
		want      time.Duration
		ok        bool
	}{
		{"no watchdog", "-", "-", 0, false},
		{"ours by pid", "30000000", self, 30 * time.Second, true},
		{"no pid: ours (handed over on an upgrade)", "30000000", "-", 30 * time.Second, true},
		{"empty pid counts as unset", "1500000", "", 1500 * time.Millisecond, true},
		{"another process's watchdog", "30000000", other, 0, false},
		{"zero means off", "0", self, 0, false},
		{"malformed usec", "30s", self, 0, false},
		{"negative usec", "-5", self, 0, false},
		{"overflowing usec", "18446744073709551615", self, 0, false},
		{"malformed pid", "30000000", "self", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setOrUnset(t, "WATCHDOG_USEC", tc.usec)
			setOrUnset(t, "WATCHDOG_PID", tc.pid)
			got, ok := WatchdogInterval()
			if got != tc.want || ok != tc.ok {
				t.Errorf("WatchdogInterval() = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// setOrUnset sets key for the test, or unsets it for "-"; either way it is
// restored afterwards.
func setOrUnset(t *testing.T, key, value string) {
	t.Helper()
	t.Setenv(key, value)
	if value == "-" {
		os.Unsetenv(key)
	}
}
