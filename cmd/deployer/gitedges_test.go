package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// gatedBuild makes every build announce itself in gate/building and wait
// for gate/open, so a test can act while a deploy is in its build.
func gatedBuild(t *testing.T, d *daemon, gate string) {
	t.Helper()
	d.stop()
	cfg, _ := os.ReadFile(d.config)
	os.WriteFile(d.config, []byte(strings.Replace(string(cfg), `build: "go build -o bin/hello ."`,
		`build: "touch `+gate+`/building; while [ ! -e `+gate+`/open ]; do sleep 0.05; done; go build -o bin/hello ."`, 1)), 0o644)
	d.start()
}

func waitBuilding(t *testing.T, gate string) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, "the build to start", func() bool {
		_, err := os.Stat(filepath.Join(gate, "building"))
		return err == nil
	})
}

func TestGitEdges(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	url := d.url(testToken)
	releasesNow := func() int {
		m, _ := filepath.Glob(filepath.Join(d.dir, "data/apps/hello/releases/v*.json"))
		return len(m)
	}

	t.Run("other branch is stored, not deployed", func(t *testing.T) {
		out, err := r.push(url, "main:refs/heads/feature")
		if err != nil || !strings.Contains(out, "refs/heads/feature stored, not deployed: only main deploys") {
			t.Fatalf("%v\n%s", err, out)
		}
		if releasesNow() != 1 {
			t.Fatal("a push to another branch made a release")
		}
		r.git("ls-remote", "--exit-code", url, "refs/heads/feature")
	})
	t.Run("tag is stored, not deployed", func(t *testing.T) {
		r.git("tag", "v1.0")
		cmd := exec.Command("git", "push", url, "v1.0")
		cmd.Dir = r.dir
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "refs/tags/v1.0 stored, not deployed") {
			t.Fatalf("%v\n%s", err, out)
		}
		if releasesNow() != 1 {
			t.Fatal("a tag push made a release")
		}
	})
	t.Run("deleting the deploy branch is rejected", func(t *testing.T) {
		before := d.branch()
		cmd := exec.Command("git", "push", url, ":refs/heads/main")
		cmd.Dir = r.dir
		b, err := cmd.CombinedOutput()
		out := string(b)
		if err == nil || !strings.Contains(out, "deleting the deploy branch is not allowed") {
			t.Fatalf("%v\n%s", err, out)
		}
		if d.branch() != before {
			t.Fatal("the deploy branch moved")
		}
		d.serves("v1")
	})
	t.Run("pushing what is live is up to date", func(t *testing.T) {
		out, err := r.push(url)
		if err != nil || !strings.Contains(out, "Everything up-to-date") || releasesNow() != 1 {
			t.Fatalf("%v\n%s", err, out)
		}
	})
	t.Run("force push deploys", func(t *testing.T) {
		r.commit("two", map[string]string{"message.txt": "two"})
		r.mustPush(d)
		r.git("reset", "-q", "--hard", "HEAD~1")
		rev := r.commit("rewritten", map[string]string{"message.txt": "rewritten"})
		if out, err := r.push(url); err == nil {
			t.Fatalf("non-fast-forward push accepted without -f:\n%s", out)
		}
		out, err := r.push(url, "--force")
		if err != nil || !strings.Contains(out, "forced update") {
			t.Fatalf("%v\n%s", err, out)
		}
		if d.branch() != rev {
			t.Fatal("force push did not move the branch")
		}
		if body, _ := d.get(); !strings.Contains(body, "rewritten") {
			t.Fatalf("force-pushed release not serving: %q", body)
		}
	})
}

// TestDisconnectMidBuildStillDeploys: the pusher's git is killed during the
// build; the deploy finishes, is recorded, and status shows it.
func TestDisconnectMidBuildStillDeploys(t *testing.T) {
	gate := t.TempDir()
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	gatedBuild(t, d, gate)
	rev := r.commit("two", map[string]string{"message.txt": "two"})
	cmd := exec.Command("git", "push", d.url(testToken), "main")
	cmd.Dir = r.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitBuilding(t, gate)
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // Ctrl-C, a dropped connection
	cmd.Wait()
	os.WriteFile(filepath.Join(gate, "open"), nil, 0o644)
	testutil.WaitFor(t, 60*time.Second, "the deploy to finish without its pusher", func() bool {
		st := d.status()
		return st.Live == "v2" && len(st.Workers) == 2 && st.Workers[0].Release == "v2" && st.Workers[1].Release == "v2"
	})
	d.serves("v2")
	if d.branch() != rev {
		t.Fatal("branch does not name the deployed revision")
	}
	if st := d.status(); st.LastDeploy == nil || st.LastDeploy.Event != "deploy" || st.LastDeploy.Release != "v2" {
		t.Fatalf("last deploy: %+v", st.LastDeploy)
	}
}

// TestCancelStopsARunningDeploy: deployer cancel during the build rejects
// the push, kills the build and leaves v1 serving.
func TestCancelStopsARunningDeploy(t *testing.T) {
	gate := t.TempDir()
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)
	gatedBuild(t, d, gate)
	before := d.branch()
	rev := r.commit("two", map[string]string{"message.txt": "two"})
	pushed := make(chan string, 1)
	go func() { out, _ := r.push(d.url(testToken)); pushed <- out }()
	waitBuilding(t, gate)
	out := d.mustCLI("cancel", "hello")
	if !strings.Contains(out, "cancelled: deploy of "+rev[:7]+" pushed by alice") {
		t.Fatalf("cancel output: %s", out)
	}
	if push := <-pushed; !strings.Contains(push, "[remote rejected] main -> main (deploy failed: build: cancelled by") {
		t.Fatalf("push output:\n%s", push)
	}
	d.serves("v1")
	if d.branch() != before {
		t.Fatal("a cancelled deploy moved the branch")
	}
	if st := d.release("v2"); st["status"] != "failed" || !strings.Contains(st["reason"].(string), "cancelled by") {
		t.Fatalf("v2: %v", st)
	}
	if out, err := d.cli("cancel", "hello"); err == nil || !strings.Contains(out, "nothing to cancel") {
		t.Fatalf("cancel with nothing running: %v %s", err, out)
	}
}

// TestLockTimeoutRejectsTheWaitingPush.
func TestLockTimeoutRejectsTheWaitingPush(t *testing.T) {
	gate := t.TempDir()
	d := newDaemon(t, "")
	cfg, _ := os.ReadFile(d.config)
	os.WriteFile(d.config, []byte(strings.Replace(string(cfg), "lock_timeout: 1m", "lock_timeout: 1s", 1)), 0o644)
	r := newAppRepo(t)
	gatedBuild(t, d, gate)
	first := make(chan error, 1)
	go func() { _, err := r.push(d.url(testToken)); first <- err }()
	waitBuilding(t, gate)
	r2 := &appRepo{t: t, dir: filepath.Join(t.TempDir(), "hello2")}
	r.git("clone", "-q", r.dir, r2.dir)
	r2.commit("B", map[string]string{"message.txt": "B"})
	out, err := r2.push(d.url(testToken))
	if err == nil || !strings.Contains(out, "another deploy is in progress: deploy of") || !strings.Contains(out, "gave up after 1s") {
		t.Fatalf("second push: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(gate, "open"), nil, 0o644)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
}

// TestOversizedPackIsRefusedAndLeavesNothing.
func TestOversizedPackIsRefusedAndLeavesNothing(t *testing.T) {
	d := newDaemon(t, "")
	cfg, _ := os.ReadFile(d.config)
	d.stop()
	os.WriteFile(d.config, []byte(strings.Replace(string(cfg), "  lock_timeout: 1m\n", "  lock_timeout: 1m\n  max_pack_size: 256KiB\n", 1)), 0o644)
	d.start()
	r := newAppRepo(t)
	r.mustPush(d)
	big := make([]byte, 1<<20)
	rand.Read(big)
	r.commit("big", map[string]string{"big.bin": string(big)})
	blob := r.git("rev-parse", "HEAD:big.bin")
	out, err := r.push(d.url(testToken))
	if err == nil {
		t.Fatalf("oversized push accepted:\n%s", out)
	}
	repo := filepath.Join(d.dir, "data/apps/hello/repo.git")
	if exec.Command("git", "--git-dir", repo, "cat-file", "-e", blob).Run() == nil {
		t.Fatal("the oversized push left its objects")
	}
	if left, _ := filepath.Glob(filepath.Join(repo, "objects", "tmp_objdir-*")); len(left) > 0 {
		t.Fatalf("quarantine left behind: %v", left)
	}
	d.serves("v1")
}

// TestPushOverTLS: with git.tls_cert and git.tls_key, git pushes over https.
func TestPushOverTLS(t *testing.T) {
	d := newDaemon(t, "")
	certFile, keyFile := selfSigned(t, d.dir)
	cfg, _ := os.ReadFile(d.config)
	d.stop()
	os.WriteFile(d.config, []byte(strings.Replace(string(cfg), "  lock_timeout: 1m\n",
		"  lock_timeout: 1m\n  tls_cert: "+certFile+"\n  tls_key: "+keyFile+"\n", 1)), 0o644)
	d.start()
	r := newAppRepo(t)
	url := strings.Replace(d.url(testToken), "http://", "https://", 1)
	cmd := exec.Command("git", "push", url, "main")
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "GIT_SSL_CAINFO="+certFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("push over TLS: %v\n%s\n%s", err, out, d.log)
	}
	d.serves("v1")
	plain := exec.Command("git", "push", d.url(testToken), "main")
	plain.Dir = r.dir
	if out, err := plain.CombinedOutput(); err == nil {
		t.Fatalf("plain HTTP accepted on the TLS port:\n%s", out)
	}
}

func selfSigned(t *testing.T, dir string) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}
