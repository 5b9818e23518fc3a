package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/fleet"
)

// Client talks to a daemon's control socket. Errors the daemon reports come
// back as *Error, which errors.Is matches against the daemon's sentinels.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client of the daemon at socket.
func NewClient(socket string) *Client {
	return &Client{Socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			if pid, ok := deadDaemon(socket); ok {
				// The descriptor keeper holds the socket: a connection
				// would wait in its queue until a daemon starts.
				return nil, fmt.Errorf("pid %d, in %s, has exited", pid, pidFileOf(socket))
			}
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

// Status fetches every app's status.
func (c *Client) Status(ctx context.Context) ([]deployer.Status, error) {
	var s []deployer.Status
	return s, c.getJSON(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// FleetStatus asks the daemon what every host of its fleet runs: itself
// first, then each peer, or why a peer did not answer.
func (c *Client) FleetStatus(ctx context.Context) ([]fleet.Result, error) {
	var r []fleet.Result
	return r, c.getJSON(ctx, http.MethodGet, "/v1/fleet/status", nil, &r)
}

// FleetRollback asks the daemon to roll app back on every host of its
// fleet, all or nothing.
func (c *Client) FleetRollback(ctx context.Context, app, to, by string, out io.Writer) error {
	return c.streamed(ctx, http.MethodPost, "/v1/fleet/apps/"+app+"/rollback", RollbackRequest{To: to, By: by}, out)
}

// Push asks the daemon to deploy p, copying its progress to out. It returns
// the deploy's error, if any.
func (c *Client) Push(ctx context.Context, app string, p deployer.Push, out io.Writer) error {
	return c.streamed(ctx, http.MethodPost, "/v1/apps/"+app+"/push", p, out)
}

// DeployRev asks the daemon to build and deploy rev without a push.
// With toFleet, it rolls out to every host of the fleet.
func (c *Client) DeployRev(ctx context.Context, app, rev, by string, toFleet bool, out io.Writer) error {
	return c.streamed(ctx, http.MethodPost, "/v1/apps/"+app+"/deploy", DeployRequest{Rev: rev, By: by, Fleet: toFleet}, out)
}

// Rollback asks the daemon to make release to (or the previous good one) live.
func (c *Client) Rollback(ctx context.Context, app, to, by string, out io.Writer) error {
	return c.streamed(ctx, http.MethodPost, "/v1/apps/"+app+"/rollback", RollbackRequest{To: to, By: by}, out)
}

// Reload asks for fresh workers of app ("" = every app).
func (c *Client) Reload(ctx context.Context, app, by string, out io.Writer) error {
	return c.streamed(ctx, http.MethodPost, "/v1/reload", ReloadRequest{App: app, By: by}, out)
}

// Cleanup prunes app's releases; keep nil means the configured value.
func (c *Client) Cleanup(ctx context.Context, app string, keep *int, dryRun bool, by string) (*deployer.CleanupResult, error) {
	var res deployer.CleanupResult
	return &res, c.getJSON(ctx, http.MethodPost, "/v1/apps/"+app+"/cleanup", CleanupRequest{Keep: keep, DryRun: dryRun, By: by}, &res)
}

// Cancel stops app's running deploy, rollback or reload and says what it was.
func (c *Client) Cancel(ctx context.Context, app, by string) (string, error) {
	var res CancelResult
	err := c.getJSON(ctx, http.MethodPost, "/v1/apps/"+app+"/cancel", CancelRequest{By: by}, &res)
	return res.Cancelled, err
}

// Logs copies app's worker log (or a build log) to out; with follow it
// keeps copying until ctx ends.
func (c *Client) Logs(ctx context.Context, app, build string, lines int, follow bool, out io.Writer) error {
	q := url.Values{"build": {build}, "lines": {strconv.Itoa(lines)}}
	if follow {
		q.Set("follow", "1")
	}
	err := c.streamed(ctx, http.MethodGet, "/v1/apps/"+app+"/logs?"+q.Encode(), nil, out)
	if ctx.Err() != nil {
		return nil // the user stopped following
	}
	return err
}

// Releases lists app's releases.
func (c *Client) Releases(ctx context.Context, app string) (*ReleaseList, error) {
	var l ReleaseList
	return &l, c.getJSON(ctx, http.MethodGet, "/v1/apps/"+app+"/releases", nil, &l)
}

// Version asks the daemon which deployer it is.
func (c *Client) Version(ctx context.Context) (*VersionInfo, error) {
	var v VersionInfo
	if err := c.getJSON(ctx, http.MethodGet, "/v1/version", nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Upgrade asks the daemon to hand over to the binary at path binary ("" =
// its own executable path), copying its progress to out.
func (c *Client) Upgrade(ctx context.Context, binary string, out io.Writer) error {
	return c.streamed(ctx, http.MethodPost, "/v1/upgrade", UpgradeRequest{Binary: binary}, out)
}

// do sends a request and returns a 200 answer; any other answer is the
// daemon's error, rebuilt.
func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://deployer"+path, rd)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, dialError(c.Socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
		return nil, replyError(resp.StatusCode, b)
	}
	return resp, nil
}

// dialError says why socket did not answer: not open to this user, or
// nobody listening. A permission error is not "the daemon is not running":
// the socket is 0600 and its directory 0700, so it is what another user
// gets from a running daemon.
func dialError(socket string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w on %s: run as the daemon's user or root", ErrSocketPermission, socket)
	}
	return fmt.Errorf("%w: no answer on %s", ErrDaemonDown, socket)
}

// replyError rebuilds the error of a non-200 answer: a JSON message, or
// plain text from a daemon (or a mux) that does not send one.
func replyError(status int, body []byte) error {
	var m message
	if json.Unmarshal(body, &m) == nil && m.Error != "" {
		return remote(m)
	}
	text := strings.TrimSpace(string(body))
	if text == "" {
		text = http.StatusText(status)
	}
	return &Error{Code: CodeOther, Message: text}
}

// remote is the error m reports.
func remote(m message) error {
	if m.Code == "" {
		m.Code = CodeOther // a daemon from before codes
	}
	return &Error{Code: m.Code, Message: m.Error}
}

func (c *Client) getJSON(ctx context.Context, method, path string, body, v any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("daemon answer: %w", err)
	}
	return nil
}

func (c *Client) streamed(ctx context.Context, method, path string, body any, out io.Writer) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readStream(resp.Body, out)
}

// ReadStream copies the {"out"} messages of a streamed answer (Stream) to
// out and returns its result: for answers that come another way than the
// control socket, such as a fleet peer's.
func ReadStream(r io.Reader, out io.Writer) error { return readStream(r, out) }

// readStream copies {"out"} messages to out and returns the result message.
func readStream(r io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		var m message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return fmt.Errorf("daemon answer: %w", err)
		}
		switch {
		case m.Error != "":
			return remote(m)
		case m.OK:
			return nil
		default:
			io.WriteString(out, m.Out)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrStreamCut, err)
	}
	return ErrStreamCut
}

// pidFileOf is the daemon's pid file, next to its control socket.
func pidFileOf(socket string) string { return filepath.Join(filepath.Dir(socket), "deployer.pid") }

// deadDaemon reports the pid the daemon's pid file names if that process
// no longer exists (the daemon crashed or was killed). A daemon that stops
// gracefully removes the file, and one that starts rewrites it before it
// serves.
func deadDaemon(socket string) (int, bool) {
	b, err := os.ReadFile(pidFileOf(socket))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
