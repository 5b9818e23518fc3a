package systemd

import (
	"math"
	"os"
	"strconv"
	"time"
)

// WatchdogInterval is the service's watchdog deadline (WatchdogSec=), from
// WATCHDOG_USEC, and whether it applies to this process: WATCHDOG_PID must
// be unset or this process's pid. Without a [Watchdog] ping within that
// time systemd kills the main process (SIGABRT) and, with Restart=, starts
// it again. Ping at half the interval, from the daemon's start.
//
// A malformed or zero value means no watchdog. The variables stay set: an
// upgrade hands WATCHDOG_USEC on ([SuccessorEnv]) and [ChildEnv] keeps them
// from workers.
func WatchdogInterval() (time.Duration, bool) {
	usec, err := strconv.ParseUint(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec == 0 || usec > math.MaxInt64/uint64(time.Microsecond) {
		return 0, false
	}
	if s := os.Getenv("WATCHDOG_PID"); s != "" {
		pid, err := strconv.Atoi(s)
		if err != nil || pid != os.Getpid() {
			return 0, false
		}
	}
	return time.Duration(usec) * time.Microsecond, true
}
