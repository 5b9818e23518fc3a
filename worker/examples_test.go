package worker_test

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// example is one of the apps in ../examples, run as a worker.
type example struct {
	name   string
	argv   func(t *testing.T) []string // skips the test when the runtime is missing
	notify bool                        // sends READY=1 and STOPPING=1
}

var examples = []example{
	{"go", buildHello, true},
	{"node", interpreted("node", "../examples/node/server.js"), false},
	{"python", interpreted("python3", "../examples/python/app.py"), true},
}

// buildHello builds examples/hello the way a release build does, from its
// own module and vendor directory.
func buildHello(t *testing.T) []string {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not in PATH")
	}
	bin := filepath.Join(t.TempDir(), "hello")
	build := exec.Command(goCmd, "build", "-o", bin, ".")
	build.Dir = "../examples/hello"
	build.Env = append(os.Environ(), "GOFLAGS=-mod=vendor", "GOWORK=off", "GOPROXY=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build examples/hello: %v\n%s", err, out)
	}
	return []string{bin}
}

func interpreted(interpreter, script string) func(t *testing.T) []string {
	return func(t *testing.T) []string {
		path, err := exec.LookPath(interpreter)
		if err != nil {
			t.Skipf("%s not in PATH", interpreter)
		}
		abs, err := filepath.Abs(script)
		if err != nil {
			t.Fatal(err)
		}
		return []string{path, abs}
	}
}

// start runs the example as worker name in dir with sock at fd 3 and, if it
// speaks sd_notify, waits for READY=1.
func (ex example) start(t *testing.T, argv []string, dir, name string, sock *os.File) (*proc, *notifySocket) {
	t.Helper()
	env := []string{"DEPLOYER_WORKER=" + name, "DEPLOYER_RELEASE=v7",
		"DEPLOYER_REVISION=0123456789abcdef", "GREETING=howdy"}
	var ns *notifySocket
	if ex.notify {
		ns = listenNotify(t, false)
		env = append(env, "NOTIFY_SOCKET="+ns.name)
	}
	p := startProc(t, dir, withListenPID(argv...), []*os.File{sock}, env...)
	if ns != nil {
		ns.expect(t, "READY=1", 30*time.Second)
	}
	return p, ns
}

func TestExamplesAnswerThenDrainOnSIGTERM(t *testing.T) {
	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			argv := ex.argv(t)
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "message.txt"), []byte(" from a file\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			ln := listenTCP(t)
			p, ns := ex.start(t, argv, dir, "3", inheritable(t, ln))

			// The socket is listening before the worker starts, so the
			// first request simply waits in the accept queue.
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			resp, body := get(t, conn, br, "/")
			want := "hello from v7 (0123456) worker 3: howdy"
			if ex.name == "go" {
				want += " from a file" // only examples/hello reads message.txt
			}
			if body != want+"\n" || resp.Close {
				t.Fatalf("GET / = %q (close %v), want %q on a kept-alive connection", body, resp.Close, want)
			}
			if _, body := get(t, conn, br, "/healthz"); body != "ok\n" {
				t.Fatalf("GET /healthz = %q, want ok", body)
			}

			p.signal(t, syscall.SIGTERM)
			if ns != nil {
				ns.expect(t, "STOPPING=1", 10*time.Second)
				if resp, _ := get(t, conn, br, "/"); !resp.Close {
					t.Error("draining: response without Connection: close")
				}
			}
			// Whether told to close or left idle past the grace period,
			// the connection ends and the worker exits 0.
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("connection not closed by the draining worker: %v", err)
			}
			p.wait(t, 30*time.Second)
			if strings.TrimSpace(p.stderr.String()) != "" {
				t.Logf("stderr: %s", &p.stderr)
			}
		})
	}
}

func TestExamplesSwapUnderLoadLosesNoRequest(t *testing.T) {
	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			argv := ex.argv(t)
			swapUnderLoad(t, func(t *testing.T, name string, sock *os.File) *proc {
				p, _ := ex.start(t, argv, "", name, sock)
				return p
			})
		})
	}
}
