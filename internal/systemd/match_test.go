package systemd

import (
	"net"
	"net/netip"
	"slices"
	"testing"
)

// tcpIn is a listening TCP socket bound to addr, as Listeners reports one.
func tcpIn(name string, fd int, addr string) Inherited {
	ap := netip.MustParseAddrPort(addr)
	return Inherited{Name: name, FD: fd, Network: "tcp", Listening: true,
		Addr: &net.TCPAddr{IP: ap.Addr().AsSlice(), Port: int(ap.Port()), Zone: ap.Addr().Zone()}}
}

func unixIn(name string, fd int, network, path string) Inherited {
	return Inherited{Name: name, FD: fd, Network: network, Listening: network != "unixgram",
		Addr: &net.UnixAddr{Name: path, Net: network}}
}

func TestMatchByNameThenByAddress(t *testing.T) {
	// What a socket unit named per socket, plus a store entry and an
	// unnamed unit (default name "deployer.socket"), would pass.
	gitHTTP := tcpIn("git-http", 3, "0.0.0.0:7007")
	control := unixIn("control", 4, "unix", "/var/lib/deployer/data/deployer.sock")
	hello0 := tcpIn("hello.0", 5, "127.0.0.1:8080")
	unnamed80 := tcpIn("deployer.socket", 6, "[::]:80")
	unnamedSSH := tcpIn("deployer.socket", 7, "127.0.0.1:2222")
	notify := unixIn("deployer.socket", 8, "unixgram", "/var/lib/deployer/data/notify.sock")
	stray := tcpIn("deployer.socket", 9, "127.0.0.1:9999")
	inherited := []Inherited{gitHTTP, control, hello0, unnamed80, unnamedSSH, notify, stray}

	found, unclaimed := Match(inherited, []Want{
		{NameGitHTTP, "127.0.0.1:7007"}, // name wins over a differing address
		{NameGitSSH, "127.0.0.1:2222"},  // no such name: by address
		{NameControl, "/var/lib/deployer/data/../data/deployer.sock"},
		{AppName("hello", 0), "127.0.0.1:8080"},
		{AppName("web", 0), "0.0.0.0:80"}, // wildcard vs dual-stack [::]
		{AppName("web", 1), "127.0.0.1:8081"},
		{"notify", "/var/lib/deployer/data/notify.sock"},
	})
	want := map[string]int{
		NameGitHTTP: 3, NameGitSSH: 7, NameControl: 4, "hello.0": 5, "web.0": 6, "notify": 8,
	}
	got := map[string]int{}
	for name, in := range found {
		got[name] = in.FD
	}
	if !mapsEqual(got, want) {
		t.Errorf("found %v, want %v", got, want)
	}
	if fds := fdsOf(unclaimed); !slices.Equal(fds, []int{9}) {
		t.Errorf("unclaimed fds %v, want [9]", fds)
	}
}

func TestMatchPrefersANamedSocketOverOneBoundToTheAddress(t *testing.T) {
	// The named socket is bound elsewhere than configured; an unnamed one
	// sits on the configured address. The order of wants must not matter.
	named := tcpIn("hello.0", 3, "0.0.0.0:8080")
	other := tcpIn("deployer.socket", 4, "127.0.0.1:8080")
	for _, wants := range [][]Want{
		{{"hello.0", "127.0.0.1:8080"}, {"git-http", "127.0.0.1:7007"}},
		{{"git-http", "127.0.0.1:7007"}, {"hello.0", "127.0.0.1:8080"}},
	} {
		found, unclaimed := Match([]Inherited{named, other}, wants)
		if found["hello.0"].FD != 3 {
			t.Errorf("wants %v: hello.0 got fd %d, want the named fd 3", wants, found["hello.0"].FD)
		}
		if _, ok := found["git-http"]; ok {
			t.Errorf("wants %v: git-http matched %v", wants, found["git-http"])
		}
		if fds := fdsOf(unclaimed); !slices.Equal(fds, []int{4}) {
			t.Errorf("wants %v: unclaimed %v, want [4]", wants, fds)
		}
	}
}

func TestMatchGivesEachSocketToOneWant(t *testing.T) {
	// The same socket named for one want and bound to another's address.
	s := tcpIn("git-http", 3, "127.0.0.1:8080")
	found, unclaimed := Match([]Inherited{s}, []Want{{"hello.0", "127.0.0.1:8080"}, {"git-http", "127.0.0.1:7007"}})
	if found["git-http"].FD != 3 || len(found) != 1 || len(unclaimed) != 0 {
		t.Errorf("found %v, unclaimed %v; want only git-http on fd 3", found, unclaimed)
	}
}

func TestMatchAmongSocketsOfTheSameNamePicksTheOneOnTheAddress(t *testing.T) {
	// One socket unit with two ListenStream= and FileDescriptorName=hello.0.
	a := tcpIn("hello.0", 3, "127.0.0.1:8080")
	b := tcpIn("hello.0", 4, "127.0.0.1:8081")
	found, unclaimed := Match([]Inherited{a, b}, []Want{{"hello.0", "127.0.0.1:8081"}, {"hello.1", "127.0.0.1:8080"}})
	if found["hello.0"].FD != 4 || found["hello.1"].FD != 3 || len(unclaimed) != 0 {
		t.Errorf("found %v, unclaimed %v; want hello.0 on fd 4, hello.1 on fd 3", found, unclaimed)
	}
	// Without an address the first of the name wins.
	found, _ = Match([]Inherited{a, b}, []Want{{"hello.0", ""}})
	if found["hello.0"].FD != 3 {
		t.Errorf("hello.0 without address got fd %d, want the first, 3", found["hello.0"].FD)
	}
}

func TestMatchWithNothingInheritedFindsNothing(t *testing.T) {
	found, unclaimed := Match(nil, []Want{{"git-http", "127.0.0.1:7007"}})
	if len(found) != 0 || len(unclaimed) != 0 {
		t.Errorf("found %v, unclaimed %v from nothing", found, unclaimed)
	}
}

func TestSameAddrComparesAddressesAsTheKernelBindsThem(t *testing.T) {
	v4 := tcpIn("x", 3, "127.0.0.1:8080")
	v6 := tcpIn("x", 3, "[::1]:8080")
	any4 := tcpIn("x", 3, "0.0.0.0:80")
	any6 := tcpIn("x", 3, "[::]:80")
	mapped := tcpIn("x", 3, "[::ffff:10.0.0.5]:80")
	ll := tcpIn("x", 3, "[fe80::1%lo]:80")
	udp := Inherited{Name: "x", FD: 3, Network: "udp", Addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}}
	notListening := v4
	notListening.Listening = false
	ctl := unixIn("x", 3, "unix", "/run/deployer/deployer.sock")
	abstract := unixIn("x", 3, "unixgram", "@deployer-notify")
	unbound := Inherited{Name: "x", FD: 3, Network: "unixgram", Addr: &net.UnixAddr{Name: "", Net: "unixgram"}}
	notSocket := Inherited{Name: "x", FD: 3}

	for _, tc := range []struct {
		in   Inherited
		addr string
		want bool
	}{
		{v4, "127.0.0.1:8080", true},
		{v4, "127.0.0.1:8081", false},
		{v4, "127.0.0.2:8080", false},
		{v4, "localhost:8080", true},
		{v6, "localhost:8080", true},
		{v6, "[::1]:8080", true},
		{v6, "127.0.0.1:8080", false},
		{v4, "0.0.0.0:8080", false}, // a wildcard config is not a loopback socket
		{v4, "example.com:8080", false},
		{v4, "127.0.0.1:0", false},
		{v4, "127.0.0.1", false},
		{any4, "0.0.0.0:80", true},
		{any4, ":80", true},
		{any4, "[::]:80", true},
		{any6, "0.0.0.0:80", true},
		{any6, ":http", true},
		{any6, "127.0.0.1:80", false},
		{mapped, "10.0.0.5:80", true},
		{ll, "[fe80::1%lo]:80", true},
		{ll, "[fe80::1]:80", false},
		{udp, "127.0.0.1:8080", false},
		{notListening, "127.0.0.1:8080", false},
		{ctl, "/run/deployer/deployer.sock", true},
		{ctl, "/run/deployer/./deployer.sock", true},
		{ctl, "/run/deployer/other.sock", false},
		{ctl, "127.0.0.1:8080", false},
		{v4, "/run/deployer/deployer.sock", false},
		{abstract, "@deployer-notify", true},
		{abstract, "/deployer-notify", false},
		{unbound, "@", false},
		{notSocket, "127.0.0.1:8080", false},
		{notSocket, "/run/x.sock", false},
	} {
		if got := sameAddr(tc.in, tc.addr); got != tc.want {
			t.Errorf("sameAddr(%s, %q) = %v, want %v", tc.in, tc.addr, got, tc.want)
		}
	}
}

func TestAppNameIsAValidDescriptorName(t *testing.T) {
	if got := AppName("hello", 0); got != "hello.0" {
		t.Errorf("AppName(hello, 0) = %q, want hello.0", got)
	}
	for _, app := range []string{"hello", "a", "my-app-2"} {
		if err := checkFDName(AppName(app, 12)); err != nil {
			t.Errorf("AppName(%q, 12) = %q is not a name systemd accepts: %v", app, AppName(app, 12), err)
		}
	}
}

func fdsOf(ins []Inherited) []int {
	var fds []int
	for _, in := range ins {
		fds = append(fds, in.FD)
	}
	return fds
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
