package systemd

import (
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
)

// Names of the daemon's own sockets in LISTEN_FDNAMES: the
// FileDescriptorName= of a socket unit, or the FDNAME= of the store.
const (
	NameGitHTTP = "git-http"   // git.http_listen
	NameGitSSH  = "git-ssh"    // git.ssh_listen
	NameControl = "control"    // the control socket, data_dir/deployer.sock
	NameAdmin   = "admin-http" // http_admin.listen
)

// AppName is the name of app's listen address i (0-based): "hello.0" for
// the first address of app hello. SPEC §8 writes it APP:N, but ':'
// separates the names in LISTEN_FDNAMES, and systemd ignores a
// FileDescriptorName= containing it; '.' cannot occur in an app name.
func AppName(app string, i int) string {
	return app + "." + strconv.Itoa(i)
}

// Want is one socket the daemon needs.
type Want struct {
	// Name is what the socket is called in LISTEN_FDNAMES: NameGitHTTP,
	// NameGitSSH, NameControl, NameAdmin or AppName(app, i). Names are unique.
	Name string

	// Addr is the configured address: "host:port" for TCP (as in
	// git.http_listen or an app's listen), an absolute path or "@name" for
	// a unix socket, or "" to match by name only.
	Addr string
}

// Match gives each want an inherited socket: first the one named
// want.Name (if systemd passed several, the one bound to want.Addr, else
// the first); then, for the wants still without one, the socket bound to
// want.Addr, whatever its name. Each inherited socket goes to at most one
// want, and a name always beats an address, whatever the order of wants.
//
// Addresses compare as the kernel binds them: a TCP want matches a
// listening TCP socket on the same port and IP, where every wildcard host
// ("", 0.0.0.0, ::) matches every wildcard (a dual-stack [::] socket serves
// IPv4 too), "localhost" matches 127.0.0.1 and ::1, and other host names
// match nothing (they are not resolved). A unix want matches a unix socket
// bound to the same cleaned path or abstract name.
//
// found maps want names to their sockets; unclaimed is the rest, in fd
// order, for the daemon to log and close (or to keep: a socket from the
// store that no config names any more is better dropped with RemoveFDs).
func Match(inherited []Inherited, wants []Want) (found map[string]Inherited, unclaimed []Inherited) {
	found = make(map[string]Inherited)
	taken := make([]bool, len(inherited))
	for _, w := range wants {
		pick := -1
		for i, in := range inherited {
			if taken[i] || in.Name != w.Name {
				continue
			}
			if pick < 0 {
				pick = i
			}
			if w.Addr != "" && sameAddr(in, w.Addr) {
				pick = i
				break
			}
		}
		if pick >= 0 {
			taken[pick] = true
			found[w.Name] = inherited[pick]
		}
	}
	for _, w := range wants {
		if _, ok := found[w.Name]; ok || w.Addr == "" {
			continue
		}
		for i, in := range inherited {
			if !taken[i] && sameAddr(in, w.Addr) {
				taken[i] = true
				found[w.Name] = in
				break
			}
		}
	}
	for i, in := range inherited {
		if !taken[i] {
			unclaimed = append(unclaimed, in)
		}
	}
	return found, unclaimed
}

// sameAddr says whether in is bound where want (a configured address) says.
func sameAddr(in Inherited, want string) bool {
	if isUnixAddr(want) {
		ua, ok := in.Addr.(*net.UnixAddr)
		if !ok || ua.Name == "" {
			return false
		}
		if want[0] == '@' || ua.Name[0] == '@' {
			return ua.Name == want
		}
		return filepath.Clean(ua.Name) == filepath.Clean(want)
	}
	ta, ok := in.Addr.(*net.TCPAddr)
	if !ok || !in.Listening {
		return false
	}
	host, portStr, err := net.SplitHostPort(want)
	if err != nil {
		return false
	}
	port, err := net.LookupPort("tcp", portStr) // a number, or a name from /etc/services
	if err != nil || port == 0 || port != ta.Port {
		return false // port 0 asks for any free port: it names no socket
	}
	bound, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	bound = bound.Unmap().WithZone(ta.Zone)
	switch host {
	case "":
		return bound.IsUnspecified()
	case "localhost":
		return bound == netip.MustParseAddr("127.0.0.1") || bound == netip.IPv6Loopback()
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	if ip.IsUnspecified() {
		return bound.IsUnspecified()
	}
	return ip == bound
}

func isUnixAddr(addr string) bool {
	return addr != "" && (addr[0] == '/' || addr[0] == '@')
}
