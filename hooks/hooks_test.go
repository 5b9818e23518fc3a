package hooks

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer/deployer/control"
	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/internal/pktline"
)

func TestPostReceiveNotesRefsThatAreNotDeployed(t *testing.T) {
	in := strings.Join([]string{
		"0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/main",
		"0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/feature",
		"1111111111111111111111111111111111111111 0000000000000000000000000000000000000000 refs/tags/old",
	}, "\n")
	var out bytes.Buffer
	env := map[string]string{EnvBranch: "main"}
	if err := PostReceive(strings.NewReader(in), &out, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	want := "-----> refs/heads/feature stored, not deployed: only main deploys\n-----> refs/tags/old deleted\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

// git refuses C0 controls in ref names but not C1 ones, which some
// terminals take for CSI.
func TestPostReceiveEscapesControlsInRefNames(t *testing.T) {
	in := "0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/\u009b2Jx\n"
	var out bytes.Buffer
	env := map[string]string{EnvBranch: "main"}
	if err := PostReceive(strings.NewReader(in), &out, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if want := "-----> refs/heads/\\u009b2Jx stored, not deployed: only main deploys\n"; out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

// TestProcReceiveRelaysTheDeployBranchAndAnswersEachRef runs the hook's
// side of a push against a control socket whose daemon fails the deploy
// with a two-line error: the pusher sees the progress, and git gets one ng
// line for it and for every ref the hook refuses by itself.
func TestProcReceiveRelaysTheDeployBranchAndAnswersEachRef(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	ln, err := control.ListenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	var got deployer.Push
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/apps/{app}/push", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("app") != "hello" || !control.Decode(w, r, &got) {
			http.NotFound(w, r)
			return
		}
		control.Stream(w, func(out io.Writer) error {
			io.WriteString(out, "-----> Building\n")
			return fmt.Errorf("%w: deploy of abc1234\nheld too long", deployer.ErrLockTimeout)
		})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()

	rev := "1111111111111111111111111111111111111111"
	var in bytes.Buffer
	pktline.Write(&in, "version=1\x00atomic\n")
	pktline.Flush(&in)
	pktline.Write(&in, deployer.ZeroRev+" "+rev+" refs/heads/main\n")
	pktline.Write(&in, deployer.ZeroRev+" "+rev+" refs/heads/other\n")
	pktline.Write(&in, rev+" "+deployer.ZeroRev+" refs/heads/main\n")
	pktline.Flush(&in)
	env := map[string]string{EnvSocket: sock, EnvApp: "hello", EnvBranch: "main", EnvPusher: "alice"}
	var out, progress bytes.Buffer
	if err := ProcReceive(context.Background(), &in, &out, &progress, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(&out)
	version, err := pktline.ReadSection(r)
	if err != nil || strings.Join(version, "|") != "version=1" {
		t.Fatalf("version section %q, %v", version, err)
	}
	results, err := pktline.ReadSection(r)
	want := []string{
		"ng refs/heads/main deploy failed: another deploy is in progress: deploy of abc1234 held too long",
		"ng refs/heads/other only the deploy branch refs/heads/main is deployed",
		"ng refs/heads/main deleting the deploy branch is not allowed",
	}
	if err != nil || strings.Join(results, "\n") != strings.Join(want, "\n") {
		t.Errorf("results:\n%s\nwant:\n%s", strings.Join(results, "\n"), strings.Join(want, "\n"))
	}
	if got.New != rev || got.Pusher != "alice" || got.Ref != "refs/heads/main" {
		t.Errorf("the daemon got %+v", got)
	}
	if progress.String() != "-----> Building\n" {
		t.Errorf("progress %q", progress.String())
	}
}
