package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/control"
	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/hooks/gitserver"
)

// The end-to-end tests run the real daemon binary, built with -race, and
// push to it with the real git client.

var daemonBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "deployer-e2e-")
	if err != nil {
		panic(err)
	}
	daemonBin = filepath.Join(dir, "deployer")
	args := []string{"build", "-o", daemonBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		panic("build daemon: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const testToken = "s3cret-token"

// lockedBuffer collects the daemon's log.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type daemon struct {
	t       *testing.T
	dir     string
	config  string
	gitAddr string
	appAddr string
	cmd     *exec.Cmd
	log     *lockedBuffer
	exited  chan struct{}
	command func() *exec.Cmd // how to start the daemon, if not plainly
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// appConfig is the hello app's settings; tests append or replace lines.
const appConfig = `
    branch: main
    listen: ["%s"]
    build: "go build -o bin/hello ."
    start: "./bin/hello"
    workers: 2
    env: {GREETING: hi}
    drain_timeout: 10s
`

// defaultHealth is used unless extra sets health itself.
const defaultHealth = "    health: {http: /healthz, min_uptime: 300ms, timeout: 30s}\n"

// failingHealth is defaultHealth for tests in which a release fails the
// health gate: the gate waits out the whole timeout before it rejects, and
// 3s is still ample for a healthy hello, which answers within milliseconds.
const failingHealth = "    health: {http: /healthz, min_uptime: 300ms, timeout: 3s}\n"

// newDaemon writes a config for the app "hello" (extra is appended to its
// settings) and starts the daemon.
func newDaemon(t *testing.T, extra string) *daemon {
	t.Helper()
	d := writeDaemonConfig(t, extra)
	d.start()
	t.Cleanup(d.stop)
	return d
}

// writeDaemonConfig writes the config newDaemon starts with.
func writeDaemonConfig(t *testing.T, extra string) *daemon {
	t.Helper()
	d := &daemon{t: t, dir: t.TempDir(), gitAddr: freeAddr(t), appAddr: freeAddr(t), log: &lockedBuffer{}}
	for d.appAddr == d.gitAddr { // a port freed once can be handed out again
		d.appAddr = freeAddr(t)
	}
	tokens := filepath.Join(d.dir, "tokens")
	if err := os.WriteFile(tokens, []byte(gitserver.HashToken("alice", testToken)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(extra, "health:") {
		extra += defaultHealth
	}
	cfg := fmt.Sprintf("data_dir: data\ngit:\n  http_listen: %s\n  tokens_file: tokens\n  lock_timeout: 1m\napps:\n  hello:%s%s",
		d.gitAddr, fmt.Sprintf(appConfig, d.appAddr), extra)
	d.config = filepath.Join(d.dir, "deployer.yaml")
	if err := os.WriteFile(d.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *daemon) start() {
	d.t.Helper()
	d.cmd = exec.Command(daemonBin, "serve", "-c", d.config)
	if d.command != nil {
		d.cmd = d.command()
	}
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func() { d.cmd.Wait(); close(d.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := d.client().Status(context.Background()); err == nil {
			return
		}
		select {
		case <-d.exited:
			d.t.Fatalf("daemon exited at start:\n%s", d.log)
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("daemon control socket not up after 30s:\n%s", d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *daemon) socket() string { return filepath.Join(d.dir, "data", "deployer.sock") }

func (d *daemon) client() *control.Client { return control.NewClient(d.socket()) }

// stop sends SIGTERM, waits for a clean exit, and checks that no worker
// outlived the daemon. After an upgrade the daemon is another process: the
// pid file names it.
func (d *daemon) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	pids := d.workerPIDs()
	pid := d.pid() // a second SIGTERM would force the stop
	if pid != d.cmd.Process.Pid && alive(d.cmd.Process.Pid) {
		d.cmd.Process.Signal(syscall.SIGTERM)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		syscall.Kill(pid, syscall.SIGKILL)
		<-d.exited
		d.t.Errorf("daemon did not stop on SIGTERM; log:\n%s", d.log)
	}
	for _, pid := range pids {
		if alive(pid) {
			syscall.Kill(-pid, syscall.SIGKILL)
			d.t.Errorf("worker %d outlived the daemon", pid)
		}
	}
	// The keeper exits just after it answered the daemon's QUIT.
	deadline := time.Now().Add(5 * time.Second)
	for len(processesUnder(d.dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if left := processesUnder(d.dir); len(left) > 0 {
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		d.t.Errorf("processes left behind after a graceful stop: %v", left)
	}
	if d.t.Failed() {
		d.t.Logf("daemon log:\n%s", d.log)
	}
	d.cmd = nil
}

// pid is the running daemon's pid: the pid file's, which an upgraded
// daemon rewrote, else the one the harness started.
func (d *daemon) pid() int {
	if b, err := os.ReadFile(filepath.Join(d.dir, "data", "deployer.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return pid
		}
	}
	return d.cmd.Process.Pid
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && b[i+2] != 'Z'
}

// processesUnder lists the live processes whose working directory or
// command line lies in dir: workers, builds and the descriptor keeper of a
// test's daemon.
func processesUnder(dir string) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == os.Getpid() || !alive(pid) {
			continue
		}
		cwd, _ := os.Readlink(p + "/cwd")
		cmdline, _ := os.ReadFile(p + "/cmdline")
		if strings.HasPrefix(cwd, dir+"/") || bytes.Contains(cmdline, []byte(dir+"/")) {
			out = append(out, pid)
		}
	}
	return out
}

func (d *daemon) status() deployer.Status {
	d.t.Helper()
	st, err := d.client().Status(context.Background())
	if err != nil {
		d.t.Fatalf("status: %v", err)
	}
	for _, s := range st {
		if s.App == "hello" {
			return s
		}
	}
	d.t.Fatalf("status has no app hello: %+v", st)
	return deployer.Status{}
}

func (d *daemon) workerPIDs() []int {
	st, err := d.client().Status(context.Background())
	if err != nil {
		return nil
	}
	var pids []int
	for _, s := range st {
		for _, w := range s.Workers {
			if s.App == "hello" {
				pids = append(pids, w.PID)
			}
		}
	}
	return pids
}

func (d *daemon) url(token string) string {
	if token == "" {
		return "http://" + d.gitAddr + "/hello.git"
	}
	return "http://alice:" + token + "@" + d.gitAddr + "/hello.git"
}

// branch is the deploy branch's revision on the server, "" if none.
func (d *daemon) branch() string {
	out, err := exec.Command("git", "--git-dir", filepath.Join(d.dir, "data/apps/hello/repo.git"),
		"rev-parse", "--verify", "-q", "refs/heads/main").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// get fetches / from the app on a new connection: a kept-alive one may be
// to a worker that drains and still answers it.
func (d *daemon) get() (string, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + d.appAddr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return string(b), err
}

// appRepo is a working copy of examples/hello, committed once.
type appRepo struct {
	t   *testing.T
	dir string
}

func newAppRepo(t *testing.T) *appRepo {
	t.Helper()
	r := &appRepo{t: t, dir: filepath.Join(t.TempDir(), "hello")}
	if err := os.CopyFS(r.dir, os.DirFS("../../examples/hello")); err != nil {
		t.Fatal(err)
	}
	r.git("init", "-q", "-b", "main")
	r.commit("first", nil)
	return r
}

func (r *appRepo) git(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@e",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@e")
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes files (path -> content) and commits everything.
func (r *appRepo) commit(msg string, files map[string]string) string {
	r.t.Helper()
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(r.dir, p), []byte(c), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	r.git("add", "-A")
	r.git("commit", "-q", "--allow-empty", "-m", msg)
	return r.git("rev-parse", "HEAD")
}

// push runs git push and returns its output and error.
func (r *appRepo) push(url string, args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"push", url, "main"}, args...)...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (r *appRepo) mustPush(d *daemon) string {
	r.t.Helper()
	out, err := r.push(d.url(testToken))
	if err != nil {
		r.t.Fatalf("push: %v\n%s\ndaemon log:\n%s", err, out, d.log)
	}
	return out
}

type statusError struct{ code int }

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d", e.code) }

func ioCopy(w io.Writer, resp *http.Response) (int64, error) { return io.Copy(w, resp.Body) }

// cli runs a client command of the daemon binary against d.
func (d *daemon) cli(args ...string) (string, error) {
	cmd := exec.Command(daemonBin, append(args, "-c", d.config)...)
	// A -race binary sleeps 1s at exit unless told not to.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (d *daemon) mustCLI(args ...string) string {
	d.t.Helper()
	out, err := d.cli(args...)
	if err != nil {
		d.t.Fatalf("deployer %v: %v\n%s\ndaemon log:\n%s", args, err, out, d.log)
	}
	return out
}

func (d *daemon) release(id string) map[string]any {
	d.t.Helper()
	b, err := os.ReadFile(filepath.Join(d.dir, "data/apps/hello/releases", id+".json"))
	if err != nil {
		d.t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		d.t.Fatal(err)
	}
	return m
}

// serves checks that / answers from release id, several times over.
func (d *daemon) serves(id string) {
	d.t.Helper()
	for i := 0; i < 10; i++ {
		body, err := d.get()
		if err != nil || !strings.HasPrefix(body, "hello from "+id+" ") {
			d.t.Fatalf("want %s serving, got %q %v", id, body, err)
		}
	}
}
