package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodApp = `
apps:
  hello:
    listen: ["127.0.0.1:8080"]
    start: ./bin/hello
`

func TestLoadAppliesDefaultsAndKeepsEnvCase(t *testing.T) {
	p := writeConfig(t, "d.yaml", goodApp+"    env: {GREETING: hi, lower: x}\n")
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Apps["hello"]
	if a == nil || a.Name != "hello" || a.Branch != "main" || a.Health.Timeout != 60*time.Second ||
		!a.Health.Preflight || a.DrainTimeout != 30*time.Second || a.KeepReleases != 5 || a.Workers < 1 {
		t.Fatalf("defaults not applied: %+v", a)
	}
	if a.Env["GREETING"] != "hi" || a.Env["lower"] != "x" {
		t.Fatalf("env case lost: %v", a.Env)
	}
	if c.Git.MaxConnections != 256 || c.Git.HandshakeTimeout != 10*time.Second ||
		c.Git.IdleTimeout != 30*time.Second || c.Git.StallTimeout != time.Minute {
		t.Fatalf("connection limits: %+v", c.Git)
	}
	if c.Git.HTTPListen != "127.0.0.1:7007" || c.Git.MaxPackSize != 1<<30 || c.Git.MaxReleaseSize != 2<<30 || !filepath.IsAbs(c.DataDir) {
		t.Fatalf("git defaults: %+v %s", c.Git, c.DataDir)
	}
}

func TestEnvironmentOverridesFileAndDefaults(t *testing.T) {
	p := writeConfig(t, "d.yaml", goodApp)
	t.Setenv("DEPLOYER_GIT_HTTP_LISTEN", "127.0.0.1:9999")
	t.Setenv("DEPLOYER_APPS_HELLO_WORKERS", "7")
	t.Setenv("DEPLOYER_APPS_HELLO_HEALTH_TIMEOUT", "5s")
	t.Setenv("DEPLOYER_GIT_MAX_CONNECTIONS", "32")
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Git.HTTPListen != "127.0.0.1:9999" || c.Apps["hello"].Workers != 7 || c.Apps["hello"].Health.Timeout != 5*time.Second ||
		c.Git.MaxConnections != 32 {
		t.Fatalf("overrides not applied: %+v %+v", c.Git, c.Apps["hello"])
	}
}

func TestLoadTOMLAndJSON(t *testing.T) {
	for name, body := range map[string]string{
		"d.toml": "[apps.hello]\nlisten = [\"127.0.0.1:8080\"]\n[apps.hello.env]\nGREETING = \"hi\"\n",
		"d.json": `{"apps": {"hello": {"listen": ["127.0.0.1:8080"], "env": {"GREETING": "hi"}}}}`,
	} {
		c, err := Load(writeConfig(t, name, body))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.Apps["hello"].Env["GREETING"] != "hi" {
			t.Fatalf("%s: env %v", name, c.Apps["hello"].Env)
		}
	}
}

func TestBadConfigNamesTheKey(t *testing.T) {
	cases := []struct{ name, body, key string }{
		{"unknown top key", "colour: red\n", "colour: unknown key"},
		{"unknown app key", goodApp + "    helth: {}\n", "apps.hello.helth"},
		{"unknown nested key", goodApp + "    health: {htp: /x}\n", "apps.hello.health.htp"},
		{"bad duration", goodApp + "    drain_timeout: soon\n", "apps.hello.drain_timeout"},
		{"bad defer_accept", goodApp + "    defer_accept: soon\n", "apps.hello.defer_accept"},
		{"negative defer_accept", goodApp + "    defer_accept: -1s\n", "apps.hello.defer_accept: -1s is not between 0s and 1h"},
		{"huge defer_accept", goodApp + "    defer_accept: 600000h\n", "apps.hello.defer_accept: 600000h0m0s is not between 0s and 1h"},
		{"health path not a path", goodApp + "    health: {http: \"/health%zz\"}\n", "apps.hello.health.http: \"/health%zz\" is not a request path"},
		{"negative warmup", goodApp + "    health: {http: /healthz, warmup: -1}\n", "apps.hello.health.warmup: -1 is not between 0 and 1000000"},
		{"warmup without http", goodApp + "    health: {warmup: 100}\n", "apps.hello.health.warmup: needs health.http"},
		{"bad health duration", goodApp + "    health: {timeout: 5 minutes}\n", "apps.hello.health.timeout"},
		{"bad cron", goodApp + "    cleanup_schedule: \"every tuesday\"\n", "apps.hello.cleanup_schedule"},
		{"duplicate listen", goodApp + "  other:\n    listen: [\"127.0.0.1:8080\"]\n", "apps.other.listen[0]: 127.0.0.1:8080 is already used by apps.hello.listen[0]"},
		{"listen clashes with git", "apps:\n  a:\n    listen: [\"127.0.0.1:7007\"]\n", "apps.a.listen[0]"},
		{"bad app name", "apps:\n  Hello_World:\n    listen: [\"127.0.0.1:1\"]\n", "apps.Hello_World: app name"},
		{"no listen", "apps:\n  a:\n    start: x\n", "apps.a.listen"},
		{"bad listen", "apps:\n  a:\n    listen: [\"8080\"]\n", "apps.a.listen[0]"},
		{"bad signal", goodApp + "    stop_signal: STOP\n", "apps.hello.stop_signal"},
		{"bad size", "git: {max_pack_size: lots}\n", "git.max_pack_size"},
		{"bad release size", "git: {max_release_size: huge}\n", "git.max_release_size"},
		{"zero release size", "git: {max_release_size: 0}\n", "git.max_release_size: must be positive"},
		{"zero workers", goodApp + "    workers: 0\n", "apps.hello.workers"},
		{"health path", goodApp + "    health: {http: healthz}\n", "apps.hello.health.http"},
		{"shared escapes", goodApp + "    shared: [\"../x\"]\n", "apps.hello.shared[0]"},
		{"bad branch", goodApp + "    branch: \"a..b\"\n", "apps.hello.branch"},
		{"bad yaml", "apps: [\n", "config "},
		{"empty pusher", goodApp + "    pushers: [alice, \"\"]\n", `apps.hello.pushers[1]: "" is not a pusher`},
		{"padded pusher", goodApp + "    pushers: [\" alice\"]\n", `apps.hello.pushers[0]: " alice" is not a pusher`},
		{"unknown user", goodApp + "    user: no-such-user-here\n", `apps.hello.user: no such user "no-such-user-here"`},
		{"unknown group", goodApp + "    user: root\n    group: no-such-group-here\n", `apps.hello.group: no such group "no-such-group-here"`},
		{"group alone", goodApp + "    group: root\n", `apps.hello.group: group "root" without a user`},
		{"unknown user named like a group", goodApp + "    user: no-such-grouper\n", `apps.hello.user: no such user "no-such-grouper"`},
		{"tiny memory", goodApp + "    limits: {memory: 100KiB}\n", "apps.hello.limits.memory: 100 KiB is below 1MiB"},
		{"bad memory", goodApp + "    limits: {memory: lots}\n", "apps.hello.limits.memory"},
		{"negative pids", goodApp + "    limits: {pids: -1}\n", "apps.hello.limits.pids: must not be negative"},
		{"bad cpu", goodApp + "    limits: {cpu: fast}\n", `apps.hello.limits.cpu: "fast" is not a number of CPUs`},
		{"unknown limit", goodApp + "    limits: {disk: 1GiB}\n", "apps.hello.limits"},
		{"fleet without token", "fleet: {peers: [{name: web2, url: \"http://127.0.0.1:7107\"}]}\n", "fleet.token_file: required when fleet.peers lists hosts"},
		{"fleet bad url", "fleet: {token_file: t, peers: [{name: web2, url: \"ftp://x\"}]}\n", `fleet.peers[0].url: "ftp://x" is not an http(s)://host:port URL`},
		{"fleet twice", "fleet: {token_file: t, peers: [{name: a, url: \"http://x:1\"}, {name: a, url: \"http://y:1\"}]}\n", `fleet.peers[1].name: "a" is listed twice`},
		{"fleet bad name", "fleet: {token_file: t, peers: [{name: A_B, url: \"http://x:1\"}]}\n", `fleet.peers[0].name: "A_B" must match`},
		{"fleet batch", "fleet: {batch_size: 0}\n", "fleet.batch_size: must be at least 1"},
		{"fleet self name", "fleet: {name: Web_1}\n", `fleet.name: "Web_1" must match`},
		{"fleet self as peer", "fleet: {name: web1, token_file: t, peers: [{name: web1, url: \"http://x:1\"}]}\n", `fleet.peers[0].name: "web1" is listed twice (or is this host's fleet.name)`},
		{"fleet unknown", "fleet: {peer: []}\n", "fleet.peer: unknown key"},
		{"pushers not a list", goodApp + "    pushers: {alice: true}\n", "apps.hello.pushers"},
		{"zero connections", "git: {max_connections: 0}\n", "git.max_connections: must be at least 1"},
		{"connections not a number", "git: {max_connections: many}\n", "git.max_connections"},
		{"zero handshake", "git: {handshake_timeout: 0s}\n", "git.handshake_timeout: must be positive"},
		{"negative idle", "git: {idle_timeout: -1s}\n", "git.idle_timeout: must be positive"},
		{"bad stall", "git: {stall_timeout: forever}\n", "git.stall_timeout"},
		{"admin bad listen", "http_admin: {listen: \"7070\", metrics_public: true}\n", `http_admin.listen: "7070" is not host:port`},
		{"admin listen clashes with git", "http_admin: {listen: \"127.0.0.1:7007\", metrics_public: true}\n", "http_admin.listen: 127.0.0.1:7007 is already used by git.http_listen"},
		{"app listen clashes with admin", "http_admin: {listen: \"127.0.0.1:8080\", metrics_public: true}\n" + goodApp, "apps.hello.listen[0]: 127.0.0.1:8080 is already used by http_admin.listen"},
		{"admin without auth", "http_admin: {listen: \"127.0.0.1:7070\"}\n", "http_admin.tokens_file: required unless metrics_public"},
		{"admin unknown", "http_admin: {public: true}\n", "http_admin.public: unknown key"},
		{"admin public not a bool", "http_admin: {metrics_public: sometimes}\n", "http_admin.metrics_public"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, "d.yaml", tc.body))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.body)
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error %q does not name %q", err, tc.key)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

func TestPushersAreAListOfNamesAndNoneAdmitsEveryone(t *testing.T) {
	c, err := Load(writeConfig(t, "d.yaml", goodApp+"    pushers: [alice, \"bob@laptop\", \"SHA256:Xyz+/1\"]\n"+
		"  open:\n    listen: [\"127.0.0.1:8081\"]\n    pushers: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	hello, open := c.Apps["hello"], c.Apps["open"]
	for pusher, want := range map[string]bool{"alice": true, "bob@laptop": true, "SHA256:Xyz+/1": true, "eve": false, "Alice": false, "": false} {
		if got := hello.Admits(pusher); got != want {
			t.Errorf("hello admits %q: %v, want %v", pusher, got, want)
		}
		if !open.Admits(pusher) {
			t.Errorf("an app with pushers: [] refused %q", pusher)
		}
	}
	t.Setenv("DEPLOYER_APPS_HELLO_PUSHERS", "carol,dave")
	if c, err = Load(writeConfig(t, "d.yaml", goodApp)); err != nil {
		t.Fatal(err)
	}
	if got := c.Apps["hello"].Pushers; len(got) != 2 || got[0] != "carol" || got[1] != "dave" {
		t.Fatalf("pushers from the environment: %q", got)
	}
}

func TestNoFileMeansDefaultsWithNoApps(t *testing.T) {
	t.Chdir(t.TempDir())
	old := SearchPaths
	SearchPaths = []string{"deployer.yaml"}
	t.Cleanup(func() { SearchPaths = old })
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.File != "" || len(c.Apps) != 0 {
		t.Fatalf("got %+v", c)
	}
}

func TestRelativePathsAreRelativeToTheConfigFile(t *testing.T) {
	p := writeConfig(t, "d.yaml", "data_dir: data\ngit: {tokens_file: tokens}\n")
	t.Chdir(t.TempDir())
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != filepath.Join(filepath.Dir(p), "data") || c.Git.TokensFile != filepath.Join(filepath.Dir(p), "tokens") {
		t.Fatalf("data_dir %s, tokens_file %s", c.DataDir, c.Git.TokensFile)
	}
}

func TestMissingOrUnreadableCredentialsFileIsAnErrorNamingTheKey(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "creds")
	if err := os.WriteFile(file, []byte("alice:00\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "unreadable")
	if err := os.WriteFile(unreadable, []byte("alice:00\n"), 0o000); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	cases := []struct {
		name, tokens, keys, want string // want "" = accepted
		needsNonRoot             bool
	}{
		{name: "neither set"},
		{name: "both readable", tokens: file, keys: file},
		{name: "an empty file is readable", tokens: empty, keys: empty},
		{name: "missing tokens_file", tokens: missing, want: "git.tokens_file: open " + missing + ": no such file or directory"},
		{name: "missing authorized_keys", tokens: file, keys: missing, want: "git.authorized_keys: open " + missing + ": no such file or directory"},
		{name: "tokens_file is a directory", tokens: dir, want: "git.tokens_file: read " + dir + ": is a directory"},
		{name: "unreadable authorized_keys", keys: unreadable, want: "git.authorized_keys: open " + unreadable + ": permission denied", needsNonRoot: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needsNonRoot && os.Geteuid() == 0 {
				t.Skip("root reads a file of mode 0000")
			}
			c := Default()
			c.Git.TokensFile, c.Git.AuthorizedKeys = tc.tokens, tc.keys
			err := c.CheckCredentials()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestAMissingFleetCAFileIsNamed(t *testing.T) {
	c := Default()
	missing := filepath.Join(t.TempDir(), "ca.pem")
	c.Fleet.CAFile = missing
	if err := c.CheckCredentials(); err == nil || err.Error() != "fleet.ca_file: open "+missing+": no such file or directory" {
		t.Fatalf("got %v", err)
	}
}

func TestHTTPAdminIsOffByDefaultAndItsTokensFileIsRelativeToTheConfig(t *testing.T) {
	c, err := Load(writeConfig(t, "d.yaml", goodApp))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAdmin != (HTTPAdmin{}) {
		t.Fatalf("http_admin is not off by default: %+v", c.HTTPAdmin)
	}
	p := writeConfig(t, "d.yaml", "http_admin: {listen: \"127.0.0.1:7070\", tokens_file: admin-tokens}\n")
	t.Chdir(t.TempDir())
	if c, err = Load(p); err != nil {
		t.Fatal(err)
	}
	if c.HTTPAdmin.Listen != "127.0.0.1:7070" || c.HTTPAdmin.TokensFile != filepath.Join(filepath.Dir(p), "admin-tokens") || c.HTTPAdmin.MetricsPublic {
		t.Fatalf("http_admin: %+v", c.HTTPAdmin)
	}
	// Public metrics need no tokens file; the environment reaches the section.
	t.Setenv("DEPLOYER_HTTP_ADMIN_LISTEN", "127.0.0.1:7171")
	t.Setenv("DEPLOYER_HTTP_ADMIN_METRICS_PUBLIC", "true")
	if c, err = Load(writeConfig(t, "d.yaml", goodApp)); err != nil {
		t.Fatal(err)
	}
	if c.HTTPAdmin.Listen != "127.0.0.1:7171" || !c.HTTPAdmin.MetricsPublic || c.HTTPAdmin.TokensFile != "" {
		t.Fatalf("http_admin from the environment: %+v", c.HTTPAdmin)
	}
}

func TestAMissingAdminTokensFileIsNamed(t *testing.T) {
	c := Default()
	missing := filepath.Join(t.TempDir(), "admin-tokens")
	c.HTTPAdmin = HTTPAdmin{Listen: "127.0.0.1:7070", TokensFile: missing}
	if err := c.CheckCredentials(); err == nil || err.Error() != "http_admin.tokens_file: open "+missing+": no such file or directory" {
		t.Fatalf("got %v", err)
	}
	c.HTTPAdmin.TokensFile = t.TempDir()
	if err := c.CheckCredentials(); err == nil || !strings.HasPrefix(err.Error(), "http_admin.tokens_file: read ") {
		t.Fatalf("a directory as tokens_file: %v", err)
	}
}

func TestLimitsAndUserParse(t *testing.T) {
	for _, cpu := range []string{"1.5", `"1.5"`} {
		p := writeConfig(t, "d.yaml", goodApp+"    user: root\n    limits: {memory: 512MiB, pids: 512, cpu: "+cpu+"}\n")
		c, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		l := c.Apps["hello"].Limits
		if l.Memory != 512<<20 || l.Pids != 512 || l.CPUs() != 1.5 || !l.Any() {
			t.Fatalf("cpu %s: %+v", cpu, l)
		}
		if c.Apps["hello"].User != "root" {
			t.Fatalf("user: %q", c.Apps["hello"].User)
		}
	}
}

// TestDeferAcceptDefaultsToOnForHTTPApps: an app with an HTTP health path
// speaks HTTP, so the kernel may hold connections until the request
// arrives; any other app gets the option only when it asks, and 0s turns
// it off for an HTTP app.
func TestDeferAcceptDefaultsToOnForHTTPApps(t *testing.T) {
	for _, c := range []struct {
		extra string
		want  time.Duration
	}{
		{"", 0},
		{"    health: {http: /healthz}\n", time.Second},
		{"    health: {http: /healthz}\n    defer_accept: 0s\n", 0},
		{"    defer_accept: 3s\n", 3 * time.Second},
	} {
		c2, err := Load(writeConfig(t, "d.yaml", goodApp+c.extra))
		if err != nil {
			t.Fatalf("%q: %v", c.extra, err)
		}
		if got := c2.Apps["hello"].DeferAcceptFor(); got != c.want {
			t.Errorf("%q: defer_accept %s, want %s", c.extra, got, c.want)
		}
	}
}
