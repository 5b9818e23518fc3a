package systemd

import "strings"

// ChildEnv returns env without the variables through which systemd speaks
// to the service's main process: LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES,
// NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID and FDSTORE. Workers, builds,
// hooks and `deployer check` get this: a worker that saw NOTIFY_SOCKET
// could speak for the daemon (with NotifyAccess=all) or be refused noisily
// (with main), and one that saw WATCHDOG_* might ping in its name.
func ChildEnv(env []string) []string {
	return filterEnv(env, isSystemdVar)
}

// SuccessorEnv returns env for the daemon that takes over as the service's
// main process on an upgrade: NOTIFY_SOCKET and WATCHDOG_USEC stay, so it
// can notify and ping once the old daemon has sent [MainPID] with its pid
// (systemd drops its messages until then); WATCHDOG_PID goes, since the new
// pid is not known before it starts, and so do LISTEN_* and FDSTORE,
// since the sockets pass another way.
func SuccessorEnv(env []string) []string {
	return filterEnv(env, func(k string) bool {
		return isSystemdVar(k) && k != "NOTIFY_SOCKET" && k != "WATCHDOG_USEC"
	})
}

func isSystemdVar(k string) bool {
	switch k {
	case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "FDSTORE":
		return true
	}
	return false
}

// filterEnv returns a copy of env without the entries whose key drop says to drop.
func filterEnv(env []string, drop func(key string) bool) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !drop(k) {
			out = append(out, kv)
		}
	}
	return out
}
