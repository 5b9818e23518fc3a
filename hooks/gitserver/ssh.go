package gitserver

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// SSH serves git over SSH: public-key authentication against an OpenSSH
// authorized_keys file, and only git-receive-pack and git-upload-pack of a
// configured app. No shell, pty, forwarding or other command is allowed.
type SSH struct {
	Apps           Apps
	AuthorizedKeys string // re-read on every authentication
	Socket         string
	HookDir        string
	MaxPack        int64
	Log            *slog.Logger
	// AuthDelay slows down each failed authentication.
	AuthDelay time.Duration
	// Limits bound idle and stalled connections; serve on a Listener with
	// the same Limits for the connection cap and the handshake and idle
	// timeouts.
	Limits Limits
}

type pusherKey struct{}

// tolerated are authorized_keys options that restrict what this server never
// allows anyway, or that carry nothing it uses.
var tolerated = map[string]bool{
	"no-pty": true, "no-port-forwarding": true, "no-agent-forwarding": true, "no-x11-forwarding": true,
	"no-user-rc": true, "restrict": true, "environment": true,
}

// allowedBy applies a key's options: from= is honoured against the peer's
// address; an option that would change what the key may do and is not
// implemented (command=, permitopen=, ...) refuses the key rather than
// grant more than the file says.
func allowedBy(options []string, peer net.Addr) error {
	for _, opt := range options {
		name, value, _ := strings.Cut(opt, "=")
		name = strings.ToLower(name)
		switch {
		case tolerated[name]:
		case name == "from":
			if !fromMatches(strings.Trim(value, `"`), peer) {
				return fmt.Errorf("from=%s does not allow %s", value, peer)
			}
		default:
			return fmt.Errorf("option %s is not supported", name)
		}
	}
	return nil
}

// fromMatches applies an OpenSSH from= pattern list (wildcards, CIDR, and
// negation with !) to the peer's IP address.
func fromMatches(list string, peer net.Addr) bool {
	host, _, err := net.SplitHostPort(peer.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	matched := false
	for _, p := range strings.Split(list, ",") {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		var hit bool
		if _, cidr, err := net.ParseCIDR(p); err == nil {
			hit = ip != nil && cidr.Contains(ip)
		} else {
			hit, _ = path.Match(p, host)
		}
		if hit && neg {
			return false
		}
		matched = matched || hit
	}
	return matched
}

// Server returns the SSH server, with the host key from hostKeyFile
// (generated there, ed25519, if it does not exist).
func (s *SSH) Server(hostKeyFile string) (*ssh.Server, error) {
	signer, err := loadOrCreateHostKey(hostKeyFile)
	if err != nil {
		return nil, err
	}
	srv := &ssh.Server{
		Handler:          s.handle,
		PublicKeyHandler: s.authorize,
		PtyCallback:      func(ssh.Context, ssh.Pty) bool { return false },
		// The Listener's timers, not deadlines, bound the handshake and
		// idle time: the server sets the connection's deadline on every
		// read and write (to none, without IdleTimeout or MaxTimeout), so
		// a deadline set here would never fire. A session is what makes
		// the connection busy: a key the client merely offers is accepted
		// by authorize before the client proves it holds the private key.
		ConnCallback: func(ctx ssh.Context, conn net.Conn) net.Conn {
			if c, ok := conn.(*Conn); ok {
				ctx.SetValue(connKey{}, c)
			}
			return conn
		},
		ConnectionFailedCallback: func(conn net.Conn, err error) {
			if errors.Is(err, net.ErrClosed) {
				// The Listener closed it (handshake_timeout, or to make
				// room): not worth a line each in a flood, nor a delay.
				s.Log.Debug("ssh: connection closed before a session", "peer", conn.RemoteAddr().String())
				return
			}
			s.Log.Warn("ssh: connection failed", "peer", conn.RemoteAddr().String(), "err", err)
			time.Sleep(s.AuthDelay) // slows down guessing; bounded and constant
		},
		// No LocalPortForwardingCallback or ReversePortForwardingHandler:
		// forwarding requests are refused.
	}
	srv.AddHostKey(signer)
	return srv, nil
}

// authorize accepts a key listed in the authorized_keys file. The pusher is
// the key's comment, or its fingerprint when it has none.
func (s *SSH) authorize(ctx ssh.Context, key ssh.PublicKey) bool {
	b, err := os.ReadFile(s.AuthorizedKeys)
	if err != nil {
		s.Log.Error("ssh: authorized_keys", "err", err)
		return false
	}
	for len(bytes.TrimSpace(b)) > 0 {
		pub, comment, options, rest, err := gossh.ParseAuthorizedKey(b)
		if err != nil {
			break // no more parseable keys
		}
		b = rest
		if !ssh.KeysEqual(pub, key) {
			continue
		}
		if err := allowedBy(options, ctx.RemoteAddr()); err != nil {
			s.Log.Warn("ssh: key refused by its authorized_keys options", "peer", ctx.RemoteAddr().String(),
				"key", gossh.FingerprintSHA256(key), "reason", err)
			return false
		}
		if comment == "" {
			comment = gossh.FingerprintSHA256(key)
		}
		ctx.SetValue(pusherKey{}, comment)
		return true
	}
	s.Log.Info("ssh: key not authorized", "peer", ctx.RemoteAddr().String(), "key", gossh.FingerprintSHA256(key))
	return false
}

var sshCommandRE = regexp.MustCompile(`^(git-receive-pack|git-upload-pack|git receive-pack|git upload-pack) +'?(/?[^' ]+?)'?$`)

func (s *SSH) handle(sess ssh.Session) {
	defer Busy(sess.Context())()
	peer := sess.RemoteAddr().String()
	refuse := func(reason string) {
		s.Log.Warn("ssh: refused", "peer", peer, "user", sess.User(), "command", sess.RawCommand(), "reason", reason)
		fmt.Fprintf(sess.Stderr(), "deployer: %s\n", reason)
		sess.Exit(1)
	}
	raw := sess.RawCommand()
	if raw == "" {
		refuse("no shell here: use git push or git fetch")
		return
	}
	m := sshCommandRE.FindStringSubmatch(raw)
	if m == nil {
		refuse("only git-receive-pack and git-upload-pack are allowed")
		return
	}
	svc := strings.Replace(m[1], " ", "-", 1)
	name := strings.TrimSuffix(strings.TrimPrefix(m[2], "/"), ".git")
	if strings.Contains(name, "/") || name == "" || name == "." || name == ".." {
		refuse(fmt.Sprintf("%q is not an app: use ssh://HOST/APP.git", m[2]))
		return
	}
	app, err := s.Apps.App(name)
	if err != nil {
		refuse(fmt.Sprintf("no app %q here", name))
		return
	}
	pusher, _ := sess.Context().Value(pusherKey{}).(string)
	if reason := notAdmitted(app, pusher); reason != "" {
		refuse(reason)
		return
	}
	protocol := ""
	for _, kv := range sess.Environ() {
		if v, ok := strings.CutPrefix(kv, "GIT_PROTOCOL="); ok {
			protocol = v
		}
	}
	cmd := gitCommand(sess.Context(), gitSetup{Socket: s.Socket, HookDir: s.HookDir, MaxPack: s.MaxPack},
		app, svc, pusher, protocol)
	// A client that stops taking the answer is cut after Limits.Stall.
	// Reads are not bounded: once the pack is in, the client rightly sends
	// nothing while the deploy runs, and SSH does not say where the pack
	// ends. TCP keep-alive finds a client that is gone.
	cut := func() {
		if conn, ok := sess.Context().Value(ssh.ContextKeyConn).(gossh.Conn); ok {
			s.Log.Warn("ssh: client stopped reading: connection closed", "peer", peer, "app", name)
			conn.Close()
		}
	}
	cmd.Stdin = sess
	cmd.Stdout = drained(&stallWriter{w: sess, stall: s.Limits.Stall, cut: cut})
	cmd.Stderr = drained(&stallWriter{w: sess.Stderr(), stall: s.Limits.Stall, cut: cut})
	start := time.Now()
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		s.Log.Info("ssh: "+svc, "app", name, "pusher", pusher, "seconds", time.Since(start).Seconds())
		sess.Exit(0)
	case errors.As(err, &exit):
		sess.Exit(exit.ExitCode())
	default:
		s.Log.Error("ssh: "+svc, "app", name, "err", err)
		sess.Exit(1)
	}
}

// loadOrCreateHostKey reads an OpenSSH private key, creating an ed25519 one
// (mode 0600) the first time.
func loadOrCreateHostKey(path string) (gossh.Signer, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("host key: %w", err)
		}
		block, err := gossh.MarshalPrivateKey(priv, "deployer host key")
		if err != nil {
			return nil, fmt.Errorf("host key: %w", err)
		}
		b = pem.EncodeToMemory(block)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("host key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	signer, err := gossh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", path, err)
	}
	return signer, nil
}
