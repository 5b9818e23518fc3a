package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// The git listeners against clients that connect and do nothing, talk
// without authenticating, or push slowly (issue 9, "Doors shut").

// doorsDaemon starts the daemon with these git connection settings, an
// SSH listener and bob's key authorized; it returns the SSH address and
// bob's ssh command line.
func doorsDaemon(t *testing.T, git, extra string) (d *daemon, sshAddr, bob string) {
	t.Helper()
	d = writeDaemonConfig(t, extra)
	cfg, _ := os.ReadFile(d.config)
	os.WriteFile(d.config, []byte(strings.Replace(string(cfg), "  lock_timeout: 1m\n", "  lock_timeout: 1m\n"+git, 1)), 0o644)
	d.start()
	t.Cleanup(d.stop)
	sshAddr, bob, _ = sshSetup(t, d)
	return d, sshAddr, bob
}

// sshPush pushes r's main over SSH as the key in sshCmd.
func sshPush(r *appRepo, addr, sshCmd string) (string, error) {
	cmd := exec.Command("git", "push", sshURL(addr), "main")
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "GIT_SSH_COMMAND="+sshCmd)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// openFDs counts the descriptors pid holds.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// fdPeak samples pid's descriptor count until stop is called, which
// returns the highest count seen.
func fdPeak(t *testing.T, pid int) (stop func() int) {
	t.Helper()
	var peak atomic.Int64
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil && int64(len(ents)) > peak.Load() {
				peak.Store(int64(len(ents)))
			}
			select {
			case <-quit:
				return
			case <-tick.C:
			}
		}
	}()
	return func() int { close(quit); <-done; return int(peak.Load()) }
}

// flood opens n connections to addr, 16 at a time, each sending one of
// greetings (round robin) and then nothing more. It fails t if a dial
// fails: the daemon must go on accepting.
func flood(t *testing.T, addr string, n int, greetings ...string) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	var failed atomic.Int64
	next := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					failed.Add(1)
					continue
				}
				if g := greetings[i%len(greetings)]; g != "" {
					c.Write([]byte(g))
				}
				conns[i] = c
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d connections to %s could not be opened", f, n, addr)
	}
	return conns
}

// closedByDaemon counts the connections the daemon has closed.
func closedByDaemon(conns []net.Conn) int {
	n := 0
	var b [512]byte
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		for {
			_, err := c.Read(b[:]) // skip a 401 or an SSH banner
			if err == nil {
				continue
			}
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				n++
			}
			break
		}
	}
	return n
}

func TestTwoThousandIdleHTTPAndSSHConnectionsDoNotStopALegitimatePush(t *testing.T) {
	const maxConns, idleConns = 64, 2000
	// Timeouts far longer than the test: only the cap's making room lets
	// the pushes in, not idle connections timing out.
	d, sshAddr, bob := doorsDaemon(t, fmt.Sprintf("  max_connections: %d\n  handshake_timeout: 10m\n  idle_timeout: 10m\n", maxConns), "")
	pid := d.pid()
	before := openFDs(t, pid)
	peak := fdPeak(t, pid)

	start := time.Now()
	httpConns := flood(t, d.gitAddr, idleConns,
		"", // connects and says nothing
		"GET /hello.git/info/refs?service=git-receive-pack HTTP/1.1\r\nHost: x\r\n",     // headers never end
		"GET /hello.git/info/refs?service=git-receive-pack HTTP/1.1\r\nHost: x\r\n\r\n", // a 401, then idle
	)
	sshConns := flood(t, sshAddr, idleConns,
		"",                        // connects and says nothing
		"SSH-2.0-OpenSSH_9.6\r\n", // the banner, then stalls
	)
	t.Logf("opened %d idle connections to each listener in %s", idleConns, time.Since(start).Round(time.Millisecond))

	r := newAppRepo(t)
	start = time.Now()
	out, err := r.push(d.url(testToken))
	httpTook := time.Since(start)
	if err != nil || !strings.Contains(out, "Deployed v1") {
		t.Fatalf("push over HTTP among idle connections: %v\n%s", err, out)
	}
	r.commit("second", nil)
	start = time.Now()
	out, err = sshPush(r, sshAddr, bob)
	sshTook := time.Since(start)
	if err != nil || !strings.Contains(out, "Deployed v2") {
		t.Fatalf("push over SSH among idle connections: %v\n%s", err, out)
	}
	top := peak()
	t.Logf("push over HTTP took %s, over SSH %s", httpTook.Round(time.Millisecond), sshTook.Round(time.Millisecond))
	t.Logf("daemon descriptors: %d before, at most %d with %d idle connections per listener and the pushes, %d after",
		before, top, idleConns, openFDs(t, pid))
	t.Logf("idle connections closed by the daemon: %d of %d over HTTP, %d of %d over SSH",
		closedByDaemon(httpConns), idleConns, closedByDaemon(sshConns), idleConns)

	if !strings.Contains(d.log.String(), "git http: max_connections reached") ||
		!strings.Contains(d.log.String(), "git ssh: max_connections reached") {
		t.Errorf("the daemon did not warn that max_connections was reached:\n%s", d.log)
	}
	if n := strings.Count(d.log.String(), "ssh: connection failed"); n > 0 {
		t.Errorf("the daemon logged %d connections it closed itself, one line each", n)
	}
	// A deploy of hello takes seconds; a listener that waits for idle
	// connections to time out would take ten minutes.
	const bound = 2 * time.Minute
	if httpTook > bound || sshTook > bound {
		t.Fatalf("pushes took %s and %s among idle connections, more than %s", httpTook, sshTook, bound)
	}
	// Two full listeners, plus the pushes' git processes and pipes.
	if limit := before + 2*maxConns + 64; top > limit {
		t.Fatalf("the daemon held %d descriptors (%d before): more than %d", top, before, limit)
	}
}

func basicAuth(user, password string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
}

// closeTime is how long the daemon takes to close c.
func closeTime(c net.Conn, start time.Time, limit time.Duration) (time.Duration, error) {
	c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return 0, fmt.Errorf("still open after %s", limit)
	}
	return time.Since(start), nil
}

// sshCloseTime is how long the daemon takes to close client's connection.
func sshCloseTime(client *gossh.Client, start time.Time, limit time.Duration) (time.Duration, error) {
	closed := make(chan struct{})
	go func() { client.Wait(); close(closed) }()
	select {
	case <-closed:
		return time.Since(start), nil
	case <-time.After(time.Until(start.Add(limit))):
		return 0, fmt.Errorf("still open after %s", limit)
	}
}

func TestIdleGitConnectionsAreClosedAfterTheirTimeouts(t *testing.T) {
	const handshake, idle = time.Second, 3 * time.Second
	d, sshAddr, bob := doorsDaemon(t, "  handshake_timeout: 1s\n  idle_timeout: 3s\n", "")
	bobKey := strings.Fields(bob)[len(strings.Fields(bob))-1]
	pem, err := os.ReadFile(bobKey)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gossh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}

	type result struct {
		took time.Duration
		err  error
	}
	cases := []struct {
		name     string
		min, max time.Duration
		run      func() (time.Duration, error)
	}{
		{"HTTP: connects and sends nothing", handshake, handshake + 2*time.Second, func() (time.Duration, error) {
			c, err := net.Dial("tcp", d.gitAddr)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			return closeTime(c, time.Now(), 30*time.Second)
		}},
		{"HTTP: headers that never end", handshake, handshake + 2*time.Second, func() (time.Duration, error) {
			c, err := net.Dial("tcp", d.gitAddr)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			start := time.Now()
			c.Write([]byte("GET /hello.git/info/refs HTTP/1.1\r\nHost: x\r\n"))
			drip(c, "X-Slow: 1\r\n")
			return closeTime(c, start, 30*time.Second)
		}},
		{"HTTP: asks again and again without a token", handshake, handshake + 2*time.Second, func() (time.Duration, error) {
			c, err := net.Dial("tcp", d.gitAddr)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			start := time.Now()
			drip(c, "GET /hello.git/info/refs?service=git-receive-pack HTTP/1.1\r\nHost: x\r\n\r\n")
			return closeTime(c, start, 30*time.Second)
		}},
		{"HTTP: keep-alive after an authenticated request", idle, idle + 2*time.Second, func() (time.Duration, error) {
			c, err := net.Dial("tcp", d.gitAddr)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			fmt.Fprintf(c, "GET /hello.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\n\r\n",
				basicAuth("alice", testToken))
			// The answer ends the request; the idle time counts from there.
			var b [4096]byte
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := c.Read(b[:])
			if err != nil || !strings.HasPrefix(string(b[:n]), "HTTP/1.1 200") {
				return 0, fmt.Errorf("authenticated request: %v %q", err, b[:n])
			}
			return closeTime(c, time.Now(), 30*time.Second)
		}},
		{"SSH: connects and sends nothing", handshake, handshake + 2*time.Second, func() (time.Duration, error) {
			c, err := net.Dial("tcp", sshAddr)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			return closeTime(c, time.Now(), 30*time.Second)
		}},
		{"SSH: sends the banner and stalls", handshake, handshake + 2*time.Second, func() (time.Duration, error) {
			c, err := net.Dial("tcp", sshAddr)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			start := time.Now()
			c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
			return closeTime(c, start, 30*time.Second)
		}},
		{"SSH: authenticates and opens no session", handshake, handshake + 2*time.Second, func() (time.Duration, error) {
			start := time.Now()
			client, err := gossh.Dial("tcp", sshAddr, &gossh.ClientConfig{
				User: "git", Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
				HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second,
			})
			if err != nil {
				return 0, err
			}
			defer client.Close()
			return sshCloseTime(client, start, 30*time.Second)
		}},
		{"SSH: idle after a session", idle, idle + 2*time.Second, func() (time.Duration, error) {
			client, err := gossh.Dial("tcp", sshAddr, &gossh.ClientConfig{
				User: "git", Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
				HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second,
			})
			if err != nil {
				return 0, err
			}
			defer client.Close()
			sess, err := client.NewSession()
			if err != nil {
				return 0, err
			}
			out, _ := sess.CombinedOutput("id") // refused, and the session ends
			if !strings.Contains(string(out), "only git-receive-pack") {
				return 0, fmt.Errorf("session: %q", out)
			}
			return sshCloseTime(client, time.Now(), 30*time.Second)
		}},
	}
	results := make([]result, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Go(func() {
			took, err := c.run()
			results[i] = result{took, err}
		})
	}
	wg.Wait()
	for i, c := range cases {
		res := results[i]
		if res.err != nil {
			t.Errorf("%s: %v; want closed after %s to %s", c.name, res.err, c.min, c.max)
			continue
		}
		t.Logf("%s: closed after %s (allowed %s to %s)", c.name, res.took.Round(10*time.Millisecond), c.min, c.max)
		// A timer set at accept may fire a little before the client's
		// own clock started.
		if res.took < c.min-100*time.Millisecond || res.took > c.max {
			t.Errorf("%s: closed after %s; want between %s and %s", c.name, res.took, c.min, c.max)
		}
	}
}

// throttle is a TCP proxy to target that passes at most chunk bytes from
// the client every gap; once a connection has passed pauseAfter bytes
// (if > 0) it passes nothing more for pause. It returns its address.
func throttle(t *testing.T, target string, chunk int, gap time.Duration, pauseAfter int, pause time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(c, s); c.Close() }()
			go func() {
				defer s.Close()
				buf := make([]byte, chunk)
				passed, paused := 0, false
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if _, werr := s.Write(buf[:n]); werr != nil {
							return
						}
						passed += n
						if pauseAfter > 0 && passed >= pauseAfter && !paused {
							paused = true
							time.Sleep(pause)
						}
						time.Sleep(gap)
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// randomFile is n bytes that do not compress, so a pack carries them all.
func randomFile(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return string(b)
}

func TestSlowButProgressingPushIsNotCutAndAStalledOneIs(t *testing.T) {
	const stall = time.Second
	// The release hook outlasts stall_timeout too: once the pack is in,
	// the client rightly sends nothing until the deploy is done.
	d := writeDaemonConfig(t, "    hooks: {release: \"sleep 2\"}\n")
	cfg, _ := os.ReadFile(d.config)
	os.WriteFile(d.config, []byte(strings.Replace(string(cfg), "  lock_timeout: 1m\n",
		"  lock_timeout: 1m\n  stall_timeout: 1s\n  handshake_timeout: 1s\n  idle_timeout: 1s\n", 1)), 0o644)
	d.start()
	t.Cleanup(d.stop)
	r := newAppRepo(t)

	// 16 KiB every 0.6s: each wait under stall_timeout, the whole upload
	// several times longer than it.
	slow := throttle(t, d.gitAddr, 16<<10, 600*time.Millisecond, 0, 0)
	r.commit("big", map[string]string{"blob.bin": randomFile(t, 160<<10)})
	start := time.Now()
	out, err := r.push("http://alice:" + testToken + "@" + slow + "/hello.git")
	took := time.Since(start)
	if err != nil || !strings.Contains(out, "Deployed v1") {
		t.Fatalf("slow push: %v\n%s\ndaemon log:\n%s", err, out, d.log)
	}
	t.Logf("a push of 160 KiB at 16 KiB per 0.6s deployed in %s, stall_timeout %s", took.Round(time.Millisecond), stall)
	if took < 5*stall {
		t.Fatalf("the slow push took only %s: it proves nothing about stall_timeout %s", took, stall)
	}

	// The same, but silent for 3s once 32 KiB of the pack are through.
	stalled := throttle(t, d.gitAddr, 16<<10, 0, 32<<10, 3*time.Second)
	r.commit("bigger", map[string]string{"blob.bin": randomFile(t, 160<<10)})
	start = time.Now()
	out, err = r.push("http://alice:" + testToken + "@" + stalled + "/hello.git")
	took = time.Since(start)
	t.Logf("a push silent for 3s mid-pack failed after %s: %v\n%s", took.Round(time.Millisecond), err, out)
	if err == nil {
		t.Fatalf("a push that stalled for 3s went through:\n%s", out)
	}
	if st := d.status(); st.Live != "v1" {
		t.Fatalf("live is %s after the stalled push, want v1", st.Live)
	}
	if !strings.Contains(d.log.String(), "the client sent nothing for stall_timeout: cut") {
		t.Fatalf("the daemon did not log the stalled read:\n%s", d.log)
	}
}

func TestCheckPrintsTheGitConnectionLimits(t *testing.T) {
	d := writeDaemonConfig(t, "")
	cfg, _ := os.ReadFile(d.config)
	os.WriteFile(d.config, []byte(strings.Replace(string(cfg), "  lock_timeout: 1m\n",
		"  lock_timeout: 1m\n  max_connections: 32\n  stall_timeout: 2m\n", 1)), 0o644)
	out, err := d.cli("check")
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, want := range []string{"max_connections: 32\n", "handshake_timeout: 10s\n", "idle_timeout: 30s\n", "stall_timeout: 2m0s\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("check does not print %q:\n%s", want, out)
		}
	}
	os.WriteFile(d.config, []byte(strings.Replace(string(cfg), "  lock_timeout: 1m\n",
		"  lock_timeout: 1m\n  max_connections: 0\n", 1)), 0o644)
	if out, err := d.cli("check"); err == nil || !strings.Contains(out, "git.max_connections: must be at least 1") {
		t.Fatalf("check accepted max_connections 0: %v\n%s", err, out)
	}
}

// drip writes line to c every 100ms, 100 times at most, until a write
// fails: a client that keeps sending without ever authenticating.
func drip(c net.Conn, line string) {
	go func() {
		for range 100 {
			if _, err := c.Write([]byte(line)); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
}
