package main

import (
	"bufio"
	"crypto/rand"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The cost of a push is bounded: what it makes the daemon hold in memory,
// what it leaves on disk when it fails or is cut off, and how long anything
// in it can keep the daemon waiting.

// newDaemonWith is newDaemon with gitExtra added to the git: section and
// the config's text passed through edit, if set, before the daemon starts.
func newDaemonWith(t *testing.T, gitExtra, appExtra string, edit func(cfg string) string) *daemon {
	t.Helper()
	d := writeDaemonConfig(t, appExtra)
	b, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "  lock_timeout: 1m\n", "  lock_timeout: 1m\n"+gitExtra, 1)
	if edit != nil {
		cfg = edit(cfg)
	}
	if err := os.WriteFile(d.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// vmHWM is the peak resident set of process pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// zeros makes a sparse file of size zero bytes in the working copy: git
// reads it as zeros and stores it compressed a thousandfold.
func (r *appRepo) zeros(name string, size int64) {
	r.t.Helper()
	f, err := os.Create(filepath.Join(r.dir, name))
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		r.t.Fatal(err)
	}
}

// TestCompressionBombDeploysWithFlatDaemonRSS: 200 MiB of zeros travel in a
// pack of a few hundred kilobytes. The checkout streams the blob to its
// file, so the daemon's peak RSS grows by a small part of the blob's size.
func TestCompressionBombDeploysWithFlatDaemonRSS(t *testing.T) {
	const size = 200 << 20
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	pid := d.pid()
	before := vmHWM(t, pid)
	r.zeros("zeros.bin", size)
	r.commit("200 MiB of zeros", nil)
	r.mustPush(d)
	d.serves("v2")
	after := vmHWM(t, pid)
	t.Logf("daemon VmHWM: %d MiB before the push, %d MiB after (+%d MiB for a %d MiB blob)",
		before>>20, after>>20, (after-before)>>20, size>>20)
	if st, err := os.Stat(filepath.Join(d.dir, "data/apps/hello/releases/v2/zeros.bin")); err != nil || st.Size() != size {
		t.Fatalf("zeros.bin in v2: %v %v", st, err)
	}
	if after-before > 64<<20 {
		t.Fatalf("the daemon's peak RSS grew by %d MiB for a %d MiB blob", (after-before)>>20, size>>20)
	}
}

// TestReleaseOverMaxReleaseSizeFailsAndTheNextPushDeploys: a tree larger
// than git.max_release_size is refused before it is written, the release
// is failed with no tree left, and the next push deploys.
func TestReleaseOverMaxReleaseSizeFailsAndTheNextPushDeploys(t *testing.T) {
	d := newDaemonWith(t, "  max_release_size: 16MiB\n", "", nil)
	d.start()
	t.Cleanup(d.stop)
	r := newAppRepo(t)
	r.mustPush(d)
	r.zeros("zeros.bin", 32<<20)
	r.commit("too large", nil)
	assertFailedPushKeepsLive(t, d, r, "checkout: checkout: release too large: 32 MiB > max_release_size 16 MiB")
	assertFailedWithoutTree(t, d, "v2")
	os.Remove(filepath.Join(r.dir, "zeros.bin"))
	r.commit("small again", nil)
	r.mustPush(d)
	d.serves("v3")
}

// assertFailedWithoutTree checks that release id is recorded as failed and
// that its tree is gone.
func assertFailedWithoutTree(t *testing.T, d *daemon, id string) {
	t.Helper()
	if st := d.release(id)["status"]; st != "failed" {
		t.Fatalf("%s is %v", id, st)
	}
	if _, err := os.Stat(filepath.Join(d.dir, "data/apps/hello/releases", id)); !os.IsNotExist(err) {
		t.Fatalf("the tree of %s is still there: %v", id, err)
	}
}

// TestDiskFullCheckoutEndsFailedAndTheNextPushDeploys: the releases
// directory is a 48 MiB tmpfs. A push of 64 MiB fills it during the
// checkout; the release ends failed, its tree is removed, the space comes
// back, and the next push deploys without a restart.
func TestDiskFullCheckoutEndsFailedAndTheNextPushDeploys(t *testing.T) {
	d := newDaemonWith(t, "", "", nil)
	releasesDir := filepath.Join(d.dir, "data/apps/hello/releases")
	if err := os.MkdirAll(releasesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", releasesDir, "tmpfs", 0, "size=48m"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v); TestReleaseOverMaxReleaseSizeFailsAndTheNextPushDeploys covers the failure path", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(releasesDir, 0); err != nil {
			t.Errorf("unmount %s: %v", releasesDir, err)
			syscall.Unmount(releasesDir, syscall.MNT_DETACH)
		}
	})
	d.start()
	t.Cleanup(d.stop) // runs before the unmount
	r := newAppRepo(t)
	r.mustPush(d)
	r.zeros("zeros.bin", 64<<20)
	r.commit("fills the disk", nil)
	assertFailedPushKeepsLive(t, d, r, "checkout: checkout: write zeros.bin: ")
	assertFailedWithoutTree(t, d, "v2")
	os.Remove(filepath.Join(r.dir, "zeros.bin"))
	r.commit("fits again", nil)
	r.mustPush(d)
	d.serves("v3")
}

// cutProxy forwards TCP connections to addr and resets both sides of the
// one that has carried more than limit bytes towards addr: an HTTP push
// cut mid-stream.
func cutProxy(t *testing.T, addr string, limit int64) (string, *atomic.Bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cut := &atomic.Bool{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			reset := func() {
				c.(*net.TCPConn).SetLinger(0)
				s.(*net.TCPConn).SetLinger(0)
				c.Close()
				s.Close()
			}
			go func() { io.Copy(c, s); c.Close() }()
			go func() {
				n, _ := io.Copy(s, io.LimitReader(c, limit))
				if n == limit {
					cut.Store(true)
					reset()
					return
				}
				s.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String(), cut
}

// TestAbortedPushLeavesNoQuarantine: an HTTP push reset after 4 MiB of a
// 16 MiB pack leaves no objects/tmp_objdir-* behind (receive-pack sees its
// input end, not a signal, and removes its own), and one that an earlier
// crash left is swept when the daemon starts.
func TestAbortedPushLeavesNoQuarantine(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	noise := make([]byte, 16<<20)
	rand.Read(noise)
	r.commit("incompressible", map[string]string{"noise.bin": string(noise)})
	proxy, cut := cutProxy(t, d.gitAddr, 4<<20)
	out, err := r.push("http://alice:" + testToken + "@" + proxy + "/hello.git")
	if err == nil || !cut.Load() {
		t.Fatalf("the push was not cut (err %v):\n%s", err, out)
	}
	objects := waitNoQuarantine(t, d)
	d.serves("v1")

	// What a receive-pack killed outright leaves, long ago: the next start sweeps it.
	planted := filepath.Join(objects, "tmp_objdir-incoming-crashed")
	if err := os.MkdirAll(filepath.Join(planted, "pack"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	for _, p := range []string{filepath.Join(planted, "pack"), planted} {
		os.Chtimes(p, old, old)
	}
	d.stop()
	d.start()
	if _, err := os.Stat(planted); !os.IsNotExist(err) {
		t.Fatalf("the stale quarantine survived a start: %v", err)
	}
	if out, err := r.push(d.url(testToken)); err != nil {
		t.Fatalf("push after the cut one: %v\n%s", err, out)
	}
	d.serves("v2")
}

// waitNoQuarantine waits, up to a bound, until the app's repository holds
// no quarantine, and returns its objects directory.
func waitNoQuarantine(t *testing.T, d *daemon) string {
	t.Helper()
	objects := filepath.Join(d.dir, "data/apps/hello/repo.git/objects")
	deadline := time.Now().Add(20 * time.Second)
	for {
		left, _ := filepath.Glob(filepath.Join(objects, "tmp_objdir-*"))
		if len(left) == 0 {
			return objects
		}
		if time.Now().After(deadline) {
			t.Fatalf("quarantine left 20s after the cut push: %v\ndaemon log:\n%s", left, d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAbortedSSHPushLeavesNoQuarantine: the same cut over SSH, the
// connection reset as when the client is killed with -9.
func TestAbortedSSHPushLeavesNoQuarantine(t *testing.T) {
	d := newDaemon(t, "")
	addr, bob, _ := sshSetup(t, d)
	r := newAppRepo(t)
	r.mustPush(d)
	noise := make([]byte, 16<<20)
	rand.Read(noise)
	r.commit("incompressible", map[string]string{"noise.bin": string(noise)})
	proxy, cut := cutProxy(t, addr, 4<<20)
	cmd := exec.Command("git", "push", sshURL(proxy), "main")
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "GIT_SSH_COMMAND="+bob)
	if out, err := cmd.CombinedOutput(); err == nil || !cut.Load() {
		t.Fatalf("the push was not cut (err %v):\n%s", err, out)
	}
	waitNoQuarantine(t, d)
	d.serves("v1")
}

// TestProcfileSymlinkFailsFastAndTheDaemonStillStops: a Procfile committed
// as a symlink to /proc/self/fd/0 is read from the commit, not followed;
// the push fails at once with the reason, and SIGTERM stops the daemon
// (the harness's stop fails the test if it does not within its bound).
func TestProcfileSymlinkFailsFastAndTheDaemonStillStops(t *testing.T) {
	d := newDaemonWith(t, "", "", func(cfg string) string {
		return strings.Replace(cfg, `    start: "./bin/hello"`+"\n", "", 1)
	})
	d.start()
	t.Cleanup(d.stop)
	r := newAppRepo(t)
	r.mustPush(d)
	procfile := filepath.Join(r.dir, "Procfile")
	os.Remove(procfile)
	if err := os.Symlink("/proc/self/fd/0", procfile); err != nil {
		t.Fatal(err)
	}
	r.commit("Procfile is a link", nil)
	start := time.Now()
	assertFailedPushKeepsLive(t, d, r,
		"start: no start command: Procfile: not a regular file: it is a symlink; commit the Procfile itself, or set apps.hello.start")
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("the refused push took %s", took)
	}
	assertFailedWithoutTree(t, d, "v2")
}
