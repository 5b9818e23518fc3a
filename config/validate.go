package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/deployer/deployer/internal/account"
	"github.com/robfig/cron/v3"
)

// Validate checks every setting, normalises paths and fills derived values.
// Each error names its key.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return fmt.Errorf("data_dir: must not be empty")
	}
	var err error
	if c.DataDir, err = c.abs(c.DataDir); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("log_format: %q is not text or json", c.LogFormat)
	}
	if err := c.validateGit(); err != nil {
		return err
	}
	if err := c.validateFleet(); err != nil {
		return err
	}
	seen := map[string]string{}
	claim := func(key, addr string) error {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%s: %q is not host:port", key, addr)
		}
		if prev, ok := seen[addr]; ok {
			return fmt.Errorf("%s: %s is already used by %s", key, addr, prev)
		}
		seen[addr] = key
		return nil
	}
	if c.Git.HTTPListen != "" {
		if err := claim("git.http_listen", c.Git.HTTPListen); err != nil {
			return err
		}
	}
	if c.Git.SSHListen != "" {
		if err := claim("git.ssh_listen", c.Git.SSHListen); err != nil {
			return err
		}
	}
	if err := c.validateAdmin(claim); err != nil {
		return err
	}
	names := make([]string, 0, len(c.Apps))
	for name := range c.Apps {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := c.Apps[name].validate("apps."+name, claim); err != nil {
			return err
		}
	}
	return nil
}

// CheckCredentials checks that the credentials files the config names
// (git.tokens_file, git.authorized_keys, fleet.token_file, fleet.ca_file,
// http_admin.tokens_file) can be read. A daemon that started without them
// would refuse every push (or every admin request), so serve (at start and
// on SIGHUP) and check stop on it, naming the key. An empty setting is no
// error: the daemon then refuses every push of that transport, and says so.
// Validate does not call it: the client commands, which read the config
// only for data_dir, run as users who may not read these files.
func (c *Config) CheckCredentials() error {
	for _, f := range []struct{ key, path string }{
		{"git.tokens_file", c.Git.TokensFile},
		{"git.authorized_keys", c.Git.AuthorizedKeys},
		{"fleet.token_file", c.Fleet.TokenFile},
		{"fleet.ca_file", c.Fleet.CAFile},
		{"http_admin.tokens_file", c.HTTPAdmin.TokensFile},
	} {
		if f.path == "" {
			continue
		}
		if err := readable(f.path); err != nil {
			return fmt.Errorf("%s: %w", f.key, err)
		}
	}
	if c.Fleet.TokenFile != "" {
		if _, err := c.Fleet.Token(); err != nil {
			return fmt.Errorf("fleet.token_file: %w", err)
		}
	}
	return nil
}

// readable opens p and reads from it, as the daemon will on every push.
func readable(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Read(make([]byte, 1)); err != nil && !errors.Is(err, io.EOF) {
		return err // a directory, or an I/O error
	}
	return nil
}

// abs resolves a relative path against the config file's directory, or the
// working directory when there is no file, so the daemon finds the same
// files whatever directory it is started from.
func (c *Config) abs(p string) (string, error) {
	if filepath.IsAbs(p) || c.File == "" {
		return filepath.Abs(p)
	}
	dir, err := filepath.Abs(filepath.Dir(c.File))
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, p), nil
}

func (a *App) validate(key string, claim func(key, addr string) error) error {
	if !appNameRE.MatchString(a.Name) {
		return fmt.Errorf("%s: app name must match [a-z0-9][a-z0-9-]*", key)
	}
	if a.Branch == "" || strings.Contains(a.Branch, "..") || strings.ContainsAny(a.Branch, " ~^:?*[\\") ||
		strings.HasPrefix(a.Branch, "/") || strings.HasSuffix(a.Branch, "/") || strings.HasSuffix(a.Branch, ".lock") {
		return fmt.Errorf("%s.branch: %q is not a valid branch name", key, a.Branch)
	}
	if len(a.Listen) == 0 {
		return fmt.Errorf("%s.listen: at least one address is required", key)
	}
	for i, addr := range a.Listen {
		if err := claim(fmt.Sprintf("%s.listen[%d]", key, i), addr); err != nil {
			return err
		}
	}
	if a.Workers < 1 {
		return fmt.Errorf("%s.workers: must be at least 1", key)
	}
	for k := range a.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("%s.env: %q is not a valid variable name", key, k)
		}
	}
	for i, p := range a.Shared {
		clean := filepath.Clean(strings.TrimSuffix(p, "/"))
		if p == "" || filepath.IsAbs(p) || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("%s.shared[%d]: %q must be a relative path inside the release", key, i, p)
		}
	}
	for i, p := range a.Pushers {
		if p == "" || p != strings.TrimSpace(p) || strings.ContainsFunc(p, unicode.IsControl) {
			return fmt.Errorf("%s.pushers[%d]: %q is not a pusher: name a token of git.tokens_file or an SSH key's comment", key, i, p)
		}
	}
	if _, err := a.Account(); err != nil {
		k := key + ".user"
		if _, ok := errors.AsType[*account.GroupError](err); ok {
			k = key + ".group"
		}
		return fmt.Errorf("%s: %w", k, err)
	}
	if a.Limits.Memory < 0 || (a.Limits.Memory > 0 && a.Limits.Memory < 1<<20) {
		return fmt.Errorf("%s.limits.memory: %s is below 1MiB", key, a.Limits.Memory)
	}
	if a.Limits.Pids < 0 {
		return fmt.Errorf("%s.limits.pids: must not be negative", key)
	}
	if a.Limits.CPU != "" {
		if f, err := strconv.ParseFloat(a.Limits.CPU, 64); err != nil || f < 0.01 || f > 4096 {
			return fmt.Errorf("%s.limits.cpu: %q is not a number of CPUs such as \"1.5\"", key, a.Limits.CPU)
		}
	}
	h := &a.Health
	if h.HTTP != "" && !strings.HasPrefix(h.HTTP, "/") {
		return fmt.Errorf("%s.health.http: %q must be a path starting with /", key, h.HTTP)
	}
	if _, err := url.ParseRequestURI(h.HTTP); h.HTTP != "" && err != nil {
		return fmt.Errorf("%s.health.http: %q is not a request path: %w", key, h.HTTP, err)
	}
	if h.Warmup < 0 || h.Warmup > 1000000 {
		return fmt.Errorf("%s.health.warmup: %d is not between 0 and 1000000", key, h.Warmup)
	}
	if h.Warmup > 0 && h.HTTP == "" {
		return fmt.Errorf("%s.health.warmup: needs health.http, the path it requests", key)
	}
	if h.Timeout <= 0 {
		return fmt.Errorf("%s.health.timeout: must be positive", key)
	}
	if h.MinUptime < 0 {
		return fmt.Errorf("%s.health.min_uptime: must not be negative", key)
	}
	if h.Watch < 0 {
		return fmt.Errorf("%s.health.watch: must not be negative", key)
	}
	if _, err := ParseSignal(a.StopSignal); err != nil {
		return fmt.Errorf("%s.stop_signal: %w", key, err)
	}
	if a.DrainTimeout <= 0 {
		return fmt.Errorf("%s.drain_timeout: must be positive", key)
	}
	if a.DeferAccept != nil && (*a.DeferAccept < 0 || *a.DeferAccept > time.Hour) {
		return fmt.Errorf("%s.defer_accept: %s is not between 0s and 1h", key, *a.DeferAccept)
	}
	if a.BuildTimeout <= 0 {
		return fmt.Errorf("%s.build_timeout: must be positive", key)
	}
	if a.KeepReleases < 0 {
		return fmt.Errorf("%s.keep_releases: must not be negative", key)
	}
	if a.CleanupSchedule != "" {
		if _, err := cron.ParseStandard(a.CleanupSchedule); err != nil {
			return fmt.Errorf("%s.cleanup_schedule: %q: %w", key, a.CleanupSchedule, err)
		}
	}
	return nil
}

var signals = map[string]syscall.Signal{
	"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "HUP": syscall.SIGHUP,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "WINCH": syscall.SIGWINCH, "KILL": syscall.SIGKILL,
}

// ParseSignal accepts "TERM", "SIGTERM" or "sigterm".
func ParseSignal(s string) (syscall.Signal, error) {
	sig, ok := signals[strings.TrimPrefix(strings.ToUpper(s), "SIG")]
	if !ok {
		return 0, fmt.Errorf("%q is not one of TERM, INT, QUIT, HUP, USR1, USR2, WINCH, KILL", s)
	}
	return sig, nil
}

// Signal is the app's stop signal; Validate has checked it.
func (a *App) Signal() syscall.Signal {
	sig, _ := ParseSignal(a.StopSignal)
	return sig
}

// validateGit checks the git: section and makes its paths absolute.
func (c *Config) validateGit() error {
	var err error
	for _, p := range []struct {
		key string
		val *string
	}{
		{"git.tokens_file", &c.Git.TokensFile},
		{"git.authorized_keys", &c.Git.AuthorizedKeys},
		{"git.ssh_host_key", &c.Git.SSHHostKey},
		{"git.tls_cert", &c.Git.TLSCert},
		{"git.tls_key", &c.Git.TLSKey},
		{"fleet.token_file", &c.Fleet.TokenFile},
		{"fleet.ca_file", &c.Fleet.CAFile},
	} {
		if *p.val == "" {
			continue
		}
		if *p.val, err = c.abs(*p.val); err != nil {
			return fmt.Errorf("%s: %w", p.key, err)
		}
	}
	if (c.Git.TLSCert == "") != (c.Git.TLSKey == "") {
		return fmt.Errorf("git.tls_cert: tls_cert and tls_key must be set together")
	}
	if c.Git.MaxPackSize <= 0 {
		return fmt.Errorf("git.max_pack_size: must be positive")
	}
	if c.Git.MaxReleaseSize <= 0 {
		return fmt.Errorf("git.max_release_size: must be positive")
	}
	if c.Git.LockTimeout <= 0 {
		return fmt.Errorf("git.lock_timeout: must be positive")
	}
	if c.Git.MaxConnections < 1 {
		return fmt.Errorf("git.max_connections: must be at least 1")
	}
	for _, d := range []struct {
		key string
		val time.Duration
	}{
		{"git.handshake_timeout", c.Git.HandshakeTimeout},
		{"git.idle_timeout", c.Git.IdleTimeout},
		{"git.stall_timeout", c.Git.StallTimeout},
	} {
		if d.val <= 0 {
			return fmt.Errorf("%s: must be positive", d.key)
		}
	}
	return nil
}

// validateAdmin checks the http_admin: section and makes its path absolute.
func (c *Config) validateAdmin(claim func(key, addr string) error) error {
	a := &c.HTTPAdmin
	if a.TokensFile != "" {
		var err error
		if a.TokensFile, err = c.abs(a.TokensFile); err != nil {
			return fmt.Errorf("http_admin.tokens_file: %w", err)
		}
	}
	if a.Listen == "" {
		return nil
	}
	if err := claim("http_admin.listen", a.Listen); err != nil {
		return err
	}
	if a.TokensFile == "" && !a.MetricsPublic {
		return fmt.Errorf("http_admin.tokens_file: required unless metrics_public")
	}
	return nil
}

func (c *Config) validateFleet() error {
	f := &c.Fleet
	if f.BatchSize < 1 {
		return fmt.Errorf("fleet.batch_size: must be at least 1")
	}
	if f.Pause < 0 {
		return fmt.Errorf("fleet.pause: must not be negative")
	}
	if len(f.Peers) > 0 && f.TokenFile == "" {
		return fmt.Errorf("fleet.token_file: required when fleet.peers lists hosts")
	}
	if f.Name != "" && !hostNameRE.MatchString(f.Name) {
		return fmt.Errorf("fleet.name: %q must match [a-z0-9][a-z0-9.-]*", f.Name)
	}
	names := map[string]bool{f.Name: f.Name != ""}
	for i, p := range f.Peers {
		key := fmt.Sprintf("fleet.peers[%d]", i)
		if !hostNameRE.MatchString(p.Name) {
			return fmt.Errorf("%s.name: %q must match [a-z0-9][a-z0-9.-]*", key, p.Name)
		}
		if names[p.Name] {
			return fmt.Errorf("%s.name: %q is listed twice (or is this host's fleet.name)", key, p.Name)
		}
		names[p.Name] = true
		u, err := url.Parse(p.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("%s.url: %q is not an http(s)://host:port URL of the peer's git listener", key, p.URL)
		}
	}
	return nil
}

var hostNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]*$`)
