package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/releases"
)

// fakeDaemon answers every operation with err, after some output for the
// streamed ones.
type fakeDaemon struct{ err error }

func (f *fakeDaemon) op(out io.Writer) error {
	io.WriteString(out, "-----> working\n")
	return f.err
}

func (f *fakeDaemon) Status() []deployer.Status { return []deployer.Status{{App: "hello"}} }
func (f *fakeDaemon) Deploy(_ context.Context, _ string, _ deployer.Push, out io.Writer) error {
	return f.op(out)
}
func (f *fakeDaemon) DeployRev(_ context.Context, _, _, _ string, _ bool, out io.Writer) error {
	return f.op(out)
}
func (f *fakeDaemon) Rollback(_ context.Context, _, _, _ string, out io.Writer) error {
	return f.op(out)
}
func (f *fakeDaemon) Reload(_ context.Context, _, _ string, out io.Writer) error { return f.op(out) }
func (f *fakeDaemon) Cleanup(context.Context, string, int, bool, string) (*deployer.CleanupResult, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &deployer.CleanupResult{Pruned: []string{"v1"}}, nil
}
func (f *fakeDaemon) Cancel(string, string) (string, error) { return "deploy of abc", f.err }
func (f *fakeDaemon) Logs(_ context.Context, _, _ string, _ int, _ bool, out io.Writer) error {
	return f.op(out)
}
func (f *fakeDaemon) Releases(string) ([]*releases.Release, string, error) {
	return []*releases.Release{{ID: "v1"}}, "v1", f.err
}

// serve runs mux on a control socket in a temporary directory and returns
// a client of it.
func serve(t *testing.T, mux http.Handler) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "c.sock")
	ln, err := ListenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return NewClient(sock)
}

func TestErrorsKeepTheirSentinelAndTextAcrossTheSocket(t *testing.T) {
	for _, c := range codes {
		// Wrapped as the daemon wraps them: the text around the sentinel
		// must arrive too.
		sent := fmt.Errorf("rollback of hello: %w: held by deploy of abc1234", c.err)
		t.Run(c.code, func(t *testing.T) {
			cl := serve(t, NewMux(&fakeDaemon{err: sent}))
			ctx := context.Background()
			var out strings.Builder
			streamed := cl.Rollback(ctx, "hello", "", "alice", &out)
			_, replied := cl.Cancel(ctx, "hello", "alice")
			for how, got := range map[string]error{"streamed": streamed, "replied": replied} {
				if !errors.Is(got, c.err) {
					t.Errorf("%s: errors.Is(%v, %v) is false", how, got, c.err)
				}
				if got == nil || got.Error() != sent.Error() {
					t.Errorf("%s: text %q, want %q", how, got, sent)
				}
				var ce *Error
				if !errors.As(got, &ce) || ce.Code != c.code {
					t.Errorf("%s: %#v is not an *Error with code %q", how, got, c.code)
				}
				for _, other := range codes {
					if other.err != c.err && errors.Is(got, other.err) {
						t.Errorf("%s: %v also matches %v", how, got, other.err)
					}
				}
			}
			if out.String() != "-----> working\n" {
				t.Errorf("output before the error: %q", out.String())
			}
		})
	}
}

func TestAnErrorWithoutSentinelKeepsItsTextAndMatchesNone(t *testing.T) {
	sent := errors.New("checkout v3: disk full\nsecond line")
	cl := serve(t, NewMux(&fakeDaemon{err: sent}))
	for how, got := range map[string]error{
		"streamed": cl.Reload(context.Background(), "", "alice", io.Discard),
		"replied": func() error {
			_, err := cl.Releases(context.Background(), "hello")
			return err
		}(),
	} {
		var ce *Error
		if !errors.As(got, &ce) || ce.Code != CodeOther || got.Error() != sent.Error() {
			t.Errorf("%s: got %#v, want an *Error %q with code %q", how, got, sent, CodeOther)
		}
		for _, c := range codes {
			if errors.Is(got, c.err) {
				t.Errorf("%s: %v matches %v", how, got, c.err)
			}
		}
	}
}

func TestRepliesCarryTheStatusOfTheirCode(t *testing.T) {
	for _, c := range codes {
		cl := serve(t, NewMux(&fakeDaemon{err: c.err}))
		resp, err := cl.http.Post("http://deployer/v1/apps/hello/cancel", "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		var m message
		json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if resp.StatusCode != c.status || m.Code != c.code || m.Error != c.err.Error() {
			t.Errorf("%s: HTTP %d %+v; want HTTP %d with the code and text", c.code, resp.StatusCode, m, c.status)
		}
	}
}

func TestSuccessAnswersDecode(t *testing.T) {
	cl := serve(t, NewMux(&fakeDaemon{}))
	ctx := context.Background()
	var out strings.Builder
	if err := cl.DeployRev(ctx, "hello", "main", "alice", false, &out); err != nil || out.String() != "-----> working\n" {
		t.Errorf("DeployRev: %v, output %q", err, out.String())
	}
	if st, err := cl.Status(ctx); err != nil || len(st) != 1 || st[0].App != "hello" {
		t.Errorf("Status: %v, %v", st, err)
	}
	if l, err := cl.Releases(ctx, "hello"); err != nil || l.Live != "v1" || len(l.Releases) != 1 {
		t.Errorf("Releases: %+v, %v", l, err)
	}
	if res, err := cl.Cleanup(ctx, "hello", nil, true, "alice"); err != nil || len(res.Pruned) != 1 {
		t.Errorf("Cleanup: %+v, %v", res, err)
	}
	if what, err := cl.Cancel(ctx, "hello", "alice"); err != nil || what != "deploy of abc" {
		t.Errorf("Cancel: %q, %v", what, err)
	}
}

// The version and upgrade endpoints are served by another package, which
// adds them to the mux: this is how, and what the client expects of them.
func TestAddedRoutesServeVersionAndUpgrade(t *testing.T) {
	started := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	mux := NewMux(&fakeDaemon{})
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"version":"1.2.3","commit":"abc","go_version":"go1.26","started":"2026-11-28T10:00:00Z","pid":42}`)
	})
	var binary string
	mux.HandleFunc("POST /v1/upgrade", func(w http.ResponseWriter, r *http.Request) {
		var req map[string]string // the wire shape, not the Go type
		if Decode(w, r, &req) {
			binary = req["binary"]
			Stream(w, func(out io.Writer) error {
				io.WriteString(out, "-----> Starting the new daemon\n")
				return fmt.Errorf("upgrade: %w", deployer.ErrClosed)
			})
		}
	})
	cl := serve(t, mux)
	v, err := cl.Version(context.Background())
	want := VersionInfo{Version: "1.2.3", Commit: "abc", GoVersion: "go1.26", Started: started, PID: 42}
	if err != nil || *v != want {
		t.Errorf("Version: %+v, %v; want %+v", v, err, want)
	}
	var out strings.Builder
	err = cl.Upgrade(context.Background(), "/usr/local/bin/deployer", &out)
	if binary != "/usr/local/bin/deployer" || out.String() != "-----> Starting the new daemon\n" {
		t.Errorf("Upgrade sent binary %q, printed %q", binary, out.String())
	}
	if !errors.Is(err, deployer.ErrClosed) || err.Error() != "upgrade: daemon is shutting down" {
		t.Errorf("Upgrade: %v", err)
	}
}

func TestBadRequestIsABadRequest(t *testing.T) {
	cl := serve(t, NewMux(&fakeDaemon{}))
	resp, err := cl.http.Post("http://deployer/v1/apps/hello/rollback", "application/json", strings.NewReader("{"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := replyError(resp.StatusCode, b)
	if resp.StatusCode != http.StatusBadRequest || !errors.Is(got, ErrBadRequest) || !strings.HasPrefix(got.Error(), "bad request: ") {
		t.Errorf("HTTP %d, %v", resp.StatusCode, got)
	}
}

func TestAnswersOfOtherVersionsAndCutStreams(t *testing.T) {
	cases := map[string]struct {
		body    string
		text    string
		matches error
	}{
		"a code this client does not know": {`{"error":"the future failed","code":"future"}` + "\n", "the future failed", nil},
		"a daemon from before codes":       {`{"out":"x"}` + "\n" + `{"error":"unknown app: \"x\""}` + "\n", `unknown app: "x"`, nil},
		"an answer cut short":              {`{"out":"x"}` + "\n", "the daemon's answer ended early", ErrStreamCut},
		"a broken line":                    {"{\n", "", nil},
	}
	for name, c := range cases {
		err := readStream(strings.NewReader(c.body), io.Discard)
		switch {
		case err == nil:
			t.Errorf("%s: no error", name)
		case c.text != "" && err.Error() != c.text:
			t.Errorf("%s: %q, want %q", name, err, c.text)
		case c.matches != nil && !errors.Is(err, c.matches):
			t.Errorf("%s: %v does not match %v", name, err, c.matches)
		}
		for _, k := range codes {
			if errors.Is(err, k.err) {
				t.Errorf("%s: %v matches %v", name, err, k.err)
			}
		}
	}
	// A daemon from before codes answered plain text on errors.
	if err := replyError(http.StatusNotFound, []byte("unknown app: \"x\"\n")); err.Error() != `unknown app: "x"` {
		t.Errorf("plain text reply: %q", err)
	}
}

func TestNoDaemonIsDaemonDown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	_, err := NewClient(sock).Status(context.Background())
	if !errors.Is(err, ErrDaemonDown) || err.Error() != "the deployer daemon is not running: no answer on "+sock {
		t.Errorf("got %v", err)
	}
}

func TestControlSocketIsOwnerOnly(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	if err := os.WriteFile(sock, nil, 0o666); err != nil { // left behind by a crashed daemon
		t.Fatal(err)
	}
	ln, err := ListenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 || st.Mode().Type() != os.ModeSocket {
		t.Errorf("socket %v, %v; want a 0600 socket", st.Mode(), err)
	}
	if _, err := ListenControl("/" + strings.Repeat("d", maxSocketPath) + ".sock"); err == nil {
		t.Error("a socket path too long for a unix socket was accepted")
	}
}
