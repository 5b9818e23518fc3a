package config

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/deployer/deployer/internal/account"
)

// Config is the whole daemon configuration.
type Config struct {
	// DataDir holds everything the daemon writes. Default "./deployer-data".
	DataDir string `mapstructure:"data_dir" yaml:"data_dir"`
	// LogFormat of the daemon's own log: "text" (default) or "json".
	LogFormat string `mapstructure:"log_format" yaml:"log_format"`
	// Git configures the git receivers.
	Git Git `mapstructure:"git" yaml:"git"`
	// Apps by name. Default: none.
	Apps map[string]*App `mapstructure:"apps" yaml:"apps"`
	// Fleet lists the other hosts of the fleet (SPEC §10). Default: none.
	Fleet Fleet `mapstructure:"fleet" yaml:"fleet"`
	// HTTPAdmin is the admin listener: metrics, the daemon's health and
	// the status page (SPEC §11). Default: off.
	HTTPAdmin HTTPAdmin `mapstructure:"http_admin" yaml:"http_admin"`

	// File is the config file that was loaded, "" for built-in defaults.
	File string `mapstructure:"-" yaml:"-"`
}

// Git configures how pushes arrive.
type Git struct {
	// HTTPListen is the smart-HTTP address. Default "127.0.0.1:7007"; "" disables it.
	HTTPListen string `mapstructure:"http_listen" yaml:"http_listen"`
	// SSHListen is the SSH address. Default "" (off).
	SSHListen string `mapstructure:"ssh_listen" yaml:"ssh_listen"`
	// SSHHostKey is the host key file. Default "": generated once into data_dir.
	SSHHostKey string `mapstructure:"ssh_host_key" yaml:"ssh_host_key"`
	// AuthorizedKeys is an OpenSSH authorized_keys file for SSH pushes. Default "".
	AuthorizedKeys string `mapstructure:"authorized_keys" yaml:"authorized_keys"`
	// TokensFile holds lines "NAME:SHA256-HEX-OF-TOKEN" for HTTP basic auth.
	// Default "": every HTTP push is refused.
	TokensFile string `mapstructure:"tokens_file" yaml:"tokens_file"`
	// MaxPackSize bounds one push. Default "1GiB".
	MaxPackSize ByteSize `mapstructure:"max_pack_size" yaml:"max_pack_size"`
	// LockTimeout is how long a push waits for another deploy of the same app. Default 10m.
	LockTimeout time.Duration `mapstructure:"lock_timeout" yaml:"lock_timeout"`
	// TLSCert and TLSKey, both set, serve git over HTTPS. Default "".
	TLSCert string `mapstructure:"tls_cert" yaml:"tls_cert"`
	TLSKey  string `mapstructure:"tls_key" yaml:"tls_key"`
	// MaxConnections caps the connections each git listener (HTTP, SSH)
	// holds at once. At the cap a new connection takes the place of the
	// longest-idle one; when every connection is pushing or fetching, new
	// ones wait in the kernel's queue. Default 256.
	MaxConnections int `mapstructure:"max_connections" yaml:"max_connections"`
	// HandshakeTimeout is how long a connection may go without an
	// authenticated request (HTTP) or session (SSH) before it is closed;
	// it is also the time an HTTP request has to send its headers. Default 10s.
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout" yaml:"handshake_timeout"`
	// IdleTimeout closes a connection that has pushed or fetched and sits
	// with nothing in flight. Default 30s.
	IdleTimeout time.Duration `mapstructure:"idle_timeout" yaml:"idle_timeout"`
	// StallTimeout cuts a push or fetch in flight when the client sends
	// nothing of its request body (HTTP) or takes nothing of the answer
	// for this long. It bounds the time between reads, not a whole push,
	// and not the deploy that follows the upload. Default 60s.
	StallTimeout time.Duration `mapstructure:"stall_timeout" yaml:"stall_timeout"`
	// MaxReleaseSize bounds the checked-out tree of one release, the sum of
	// its files' sizes: a push whose tree is larger fails and nothing of it
	// stays on disk. Default "2GiB".
	MaxReleaseSize ByteSize `mapstructure:"max_release_size" yaml:"max_release_size"`
}

// HTTPAdmin configures the admin listener (SPEC §11): /metrics for
// Prometheus, /healthz for the daemon itself, and the status page at /.
type HTTPAdmin struct {
	// Listen is the admin address, such as "127.0.0.1:7070". Default "" (off).
	Listen string `mapstructure:"listen" yaml:"listen"`
	// TokensFile holds lines "NAME:SHA256-HEX-OF-TOKEN", as git.tokens_file
	// (it may be the same file), for HTTP basic auth to everything the
	// listener serves. Default "". Required with listen unless
	// metrics_public; without it only /metrics and /healthz answer.
	TokensFile string `mapstructure:"tokens_file" yaml:"tokens_file"`
	// MetricsPublic serves /metrics and /healthz without authentication;
	// the rest still needs a token. Default false.
	MetricsPublic bool `mapstructure:"metrics_public" yaml:"metrics_public"`
}

// App is one deployable application.
type App struct {
	// Name is the key under apps; set by Load.
	Name string `mapstructure:"-" yaml:"-"`
	// Branch is the deploy branch. Default "main".
	Branch string `mapstructure:"branch" yaml:"branch"`
	// Listen are the sockets the daemon holds, passed as fd 3, 4, ... in order. Required.
	Listen []string `mapstructure:"listen" yaml:"listen"`
	// Build runs with sh -c in the new release dir. Default "" (no build).
	Build string `mapstructure:"build" yaml:"build"`
	// Start runs each worker with sh -c. Default "": the web: line of the repo's Procfile.
	Start string `mapstructure:"start" yaml:"start"`
	// Workers is the pool size. Default: the number of CPUs.
	Workers int `mapstructure:"workers" yaml:"workers"`
	// Env is added to every worker's, build's and hook's environment. Default none.
	Env map[string]string `mapstructure:"env" yaml:"env"`
	// Shared paths live in apps/APP/shared and are linked into each release. Default none.
	Shared []string `mapstructure:"shared" yaml:"shared"`
	// Pushers may push to the app and fetch from it: token names of
	// git.tokens_file and SSH key comments (a key without one is named by its
	// SHA256: fingerprint). Default [] : every authenticated pusher.
	Pushers []string `mapstructure:"pushers" yaml:"pushers"`
	// User runs the app's build, hooks, preflight and workers: a user name
	// or uid. Default "": the daemon's own user (a warning when that is root).
	User string `mapstructure:"user" yaml:"user"`
	// Group overrides User's primary group. Default "".
	Group string `mapstructure:"group" yaml:"group"`
	// Limits bound each of the app's processes (every worker, build, hook
	// and preflight instance on its own) where cgroup v2 controllers are
	// delegated to the daemon. Default: none.
	Limits Limits `mapstructure:"limits" yaml:"limits"`
	// Health decides when a release is good.
	Health Health `mapstructure:"health" yaml:"health"`
	// StopSignal retires a worker. Default "TERM".
	StopSignal string `mapstructure:"stop_signal" yaml:"stop_signal"`
	// DrainTimeout is how long a retiring worker may take before SIGKILL. Default 30s.
	DrainTimeout time.Duration `mapstructure:"drain_timeout" yaml:"drain_timeout"`
	// DeferAccept is how long the kernel holds a new connection back from
	// the workers until its first bytes arrive (TCP_DEFER_ACCEPT, as
	// systemd's DeferAcceptSec=). Default: 1s when health.http is set (the
	// app speaks HTTP, whose client speaks first), else 0 (off). Set 0s for
	// a protocol in which the server speaks first.
	DeferAccept *time.Duration `mapstructure:"defer_accept" yaml:"defer_accept"`
	// BuildTimeout bounds the build and each hook. Default 15m.
	BuildTimeout time.Duration `mapstructure:"build_timeout" yaml:"build_timeout"`
	// KeepReleases is how many good releases cleanup keeps. Default 5.
	KeepReleases int `mapstructure:"keep_releases" yaml:"keep_releases"`
	// CleanupSchedule is a robfig/cron spec. Default "@daily".
	CleanupSchedule string `mapstructure:"cleanup_schedule" yaml:"cleanup_schedule"`
	// Hooks are lifecycle commands run with sh -c in the release dir.
	Hooks Hooks `mapstructure:"hooks" yaml:"hooks"`
}

// Fleet is this host's view of the fleet: its peers and how they
// authenticate each other.
type Fleet struct {
	// Name is this host's name in the fleet: in its answers to peers and as
	// the prefix of its lines in a rollout. Default "": the hostname.
	Name string `mapstructure:"name" yaml:"name"`
	// TokenFile holds the secret every host of the fleet shares. Required with peers.
	TokenFile string `mapstructure:"token_file" yaml:"token_file"`
	// CAFile is a PEM bundle of the certificate authorities this host
	// trusts for its peers' HTTPS (their git.tls_cert), besides the
	// system's. Default "": the system's only.
	CAFile string `mapstructure:"ca_file" yaml:"ca_file"`
	// BatchSize is how many peers switch at a time after this host. Default 1.
	BatchSize int `mapstructure:"batch_size" yaml:"batch_size"`
	// Pause is the wait between batches. Default 0.
	Pause time.Duration `mapstructure:"pause" yaml:"pause"`
	// Peers are the other hosts. Default: none.
	Peers []Peer `mapstructure:"peers" yaml:"peers"`
}

// Peer is another host of the fleet.
type Peer struct {
	// Name is the host's name in output. Required, unique.
	Name string `mapstructure:"name" yaml:"name"`
	// URL is the peer's git HTTP(S) listener, e.g. http://10.0.0.2:7007. Required.
	URL string `mapstructure:"url" yaml:"url"`
}

// Token reads the fleet's shared secret; "" with no peers.
func (f Fleet) Token() (string, error) {
	if f.TokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(f.TokenFile)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", fmt.Errorf("%s: the fleet token must be at least 16 characters", f.TokenFile)
	}
	return t, nil
}

// Limits are cgroup v2 limits for one process and everything it forks.
// A zero field sets no limit.
type Limits struct {
	// Memory is memory.max. Default 0 (none).
	Memory ByteSize `mapstructure:"memory" yaml:"memory"`
	// Pids is pids.max. Default 0 (none).
	Pids int `mapstructure:"pids" yaml:"pids"`
	// CPU is a number of CPUs, such as "1.5" (cpu.max). Default "" (none).
	CPU string `mapstructure:"cpu" yaml:"cpu"`
}

// CPUs is CPU as a number; 0 when unset. Validate has checked it.
func (l Limits) CPUs() float64 {
	f, _ := strconv.ParseFloat(l.CPU, 64)
	return f
}

// Any reports whether a limit is set.
func (l Limits) Any() bool { return l.Memory > 0 || l.Pids > 0 || l.CPU != "" }

// Health configures the health gate of a release.
type Health struct {
	// HTTP is a path probed with GET; 2xx is healthy. Default "" (no HTTP probe).
	HTTP string `mapstructure:"http" yaml:"http"`
	// TCP probes that a connect succeeds. Default false.
	TCP bool `mapstructure:"tcp" yaml:"tcp"`
	// Command is run in the release dir; exit 0 is healthy. Default "".
	Command string `mapstructure:"command" yaml:"command"`
	// Preflight probes one instance on a private socket before any live traffic. Default true.
	Preflight bool `mapstructure:"preflight" yaml:"preflight"`
	// Notify waits for READY=1 on NOTIFY_SOCKET from each worker. Default false.
	Notify bool `mapstructure:"notify" yaml:"notify"`
	// MinUptime is how long a green worker must stay up. Default 2s.
	MinUptime time.Duration `mapstructure:"min_uptime" yaml:"min_uptime"`
	// Timeout bounds the health gate. Default 60s.
	Timeout time.Duration `mapstructure:"timeout" yaml:"timeout"`
	// Warmup is how many GETs of HTTP per green worker the daemon sends to
	// the live socket once green is up, before the cut-over, so that a
	// runtime with a JIT (Node, the JVM, PyPy) meets live traffic warm
	// (supervisor.Pool.Warm: only green's connections carry them, and they
	// are replaced as live clients' are). Default 0 (off); needs HTTP.
	Warmup int `mapstructure:"warmup" yaml:"warmup"`
	// Watch keeps probing the live address after cut-over. Default 0 (off).
	Watch time.Duration `mapstructure:"watch" yaml:"watch"`
}

// Hooks are lifecycle commands.
type Hooks struct {
	PreBuild   string `mapstructure:"pre_build" yaml:"pre_build"`
	Release    string `mapstructure:"release" yaml:"release"`
	PostDeploy string `mapstructure:"post_deploy" yaml:"post_deploy"`
	OnFailure  string `mapstructure:"on_failure" yaml:"on_failure"`
}

// Default returns the built-in configuration: no apps.
func Default() *Config {
	return &Config{
		DataDir:   "./deployer-data",
		LogFormat: "text",
		Git: Git{
			HTTPListen:       "127.0.0.1:7007",
			MaxPackSize:      1 << 30,
			LockTimeout:      10 * time.Minute,
			MaxConnections:   256,
			HandshakeTimeout: 10 * time.Second,
			IdleTimeout:      30 * time.Second,
			StallTimeout:     60 * time.Second,
			MaxReleaseSize:   2 << 30,
		},
		Apps:  map[string]*App{},
		Fleet: Fleet{BatchSize: 1},
	}
}

// DefaultApp returns an app with every default filled in.
func DefaultApp(name string) *App {
	return &App{
		Name:            name,
		Branch:          "main",
		Workers:         runtime.NumCPU(),
		Env:             map[string]string{},
		Health:          Health{Preflight: true, MinUptime: 2 * time.Second, Timeout: 60 * time.Second},
		StopSignal:      "TERM",
		DrainTimeout:    30 * time.Second,
		BuildTimeout:    15 * time.Minute,
		KeepReleases:    5,
		CleanupSchedule: "@daily",
	}
}

// DeferAcceptFor is the app's DeferAccept with its default filled in.
func (a *App) DeferAcceptFor() time.Duration {
	if a.DeferAccept != nil {
		return *a.DeferAccept
	}
	if a.Health.HTTP != "" {
		return time.Second
	}
	return 0
}

// Admits says whether pusher, already authenticated, may push to the app and
// fetch from it.
func (a *App) Admits(pusher string) bool {
	return len(a.Pushers) == 0 || slices.Contains(a.Pushers, pusher)
}

// Account is who the app's processes run as; nil: the daemon's own user.
// Validate has checked that it resolves.
func (a *App) Account() (*account.Account, error) {
	return account.Lookup(a.User, a.Group)
}

// AppNames returns the app names, sorted.
func (c *Config) AppNames() []string {
	names := make([]string, 0, len(c.Apps))
	for n := range c.Apps {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
