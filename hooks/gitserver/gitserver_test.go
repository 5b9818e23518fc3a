package gitserver

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestSplitPath(t *testing.T) {
	cases := map[string][2]string{
		"/hello.git/info/refs":         {"hello", "info/refs"},
		"/hello/git-receive-pack":      {"hello", "git-receive-pack"},
		"/hello.git/git-upload-pack":   {"hello", "git-upload-pack"},
		"/a/b.git/info/refs":           {"", ""},
		"/../hello.git/info/refs":      {"", ""},
		"/hello.git/objects/info/x":    {"", ""},
		"/.git/info/refs":              {"", ""},
		"/hello.git/git-receive-pack/": {"", ""},
	}
	for in, want := range cases {
		app, action, ok := splitPath(in)
		if (want[0] == "") == ok || app != want[0] || action != want[1] {
			t.Errorf("splitPath(%q) = %q, %q, %v; want %q, %q", in, app, action, ok, want[0], want[1])
		}
	}
}

func TestSSHCommandParsing(t *testing.T) {
	cases := map[string]string{ // command -> repo path, "" if refused
		"git-receive-pack '/hello.git'": "/hello.git",
		"git-upload-pack 'hello.git'":   "hello.git",
		"git receive-pack '/hello.git'": "/hello.git",
		"git-receive-pack hello":        "hello",
		"git-receive-pack 'a' ; id":     "",
		"git-receive-pack 'a b'":        "",
		"sh -c id":                      "",
		"git-shell":                     "",
	}
	for in, want := range cases {
		m := sshCommandRE.FindStringSubmatch(in)
		got := ""
		if m != nil {
			got = m[2]
		}
		if got != want {
			t.Errorf("%q: repo %q, want %q", in, got, want)
		}
	}
}

func TestTokens(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(file, []byte("# team\n\n"+HashToken("alice", "a-token")+"\nmalformed line\n"+HashToken("bob", "b-token")+"\n"), 0o600)
	tok := Tokens{File: file}
	for token, want := range map[string]string{"a-token": "alice", "b-token": "bob", "": "", "c-token": "", "a-toke": ""} {
		name, ok := tok.Check(token)
		if name != want || ok != (want != "") {
			t.Errorf("Check(%q) = %q, %v; want %q", token, name, ok, want)
		}
	}
	if _, ok := (Tokens{}).Check("a-token"); ok {
		t.Error("no tokens file accepted a token")
	}
}

func TestAuthorizedKeysOptions(t *testing.T) {
	peer := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5555}
	cases := []struct {
		options []string
		ok      bool
	}{
		{nil, true},
		{[]string{"no-pty", "no-port-forwarding", "restrict"}, true},
		{[]string{`from="10.1.2.3"`}, true},
		{[]string{`from="10.1.*"`}, true},
		{[]string{`from="10.0.0.0/8,!10.1.2.3"`}, false},
		{[]string{`from="10.0.0.0/8"`}, true},
		{[]string{`from="192.168.1.1"`}, false},
		{[]string{`command="/usr/bin/gitolite-shell alice"`}, false},
		{[]string{`permitopen="host:80"`}, false},
	}
	for _, c := range cases {
		if err := allowedBy(c.options, peer); (err == nil) != c.ok {
			t.Errorf("%v: err = %v, want ok=%v", c.options, err, c.ok)
		}
	}
}
