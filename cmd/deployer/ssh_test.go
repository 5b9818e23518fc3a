package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// sshSetup gives d an SSH listener with bob's key authorized and returns
// the ssh command lines for bob and for a stranger.
func sshSetup(t *testing.T, d *daemon) (addr, bob, stranger string) {
	t.Helper()
	keys := t.TempDir()
	for _, k := range []struct{ file, comment string }{{"bob", "bob@laptop"}, {"stranger", "eve"}} {
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", k.comment, "-f", filepath.Join(keys, k.file)).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(keys, "bob.pub"))
	authorized := filepath.Join(d.dir, "authorized_keys")
	os.WriteFile(authorized, []byte("# the team\n\nno-pty,no-port-forwarding "+string(pub)), 0o600)
	addr = freeAddr(t)
	cfg, _ := os.ReadFile(d.config)
	d.stop()
	os.WriteFile(d.config, []byte(strings.Replace(string(cfg), "  lock_timeout: 1m\n",
		"  lock_timeout: 1m\n  ssh_listen: "+addr+"\n  authorized_keys: "+authorized+"\n", 1)), 0o644)
	d.start()
	base := "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR -i "
	return addr, base + filepath.Join(keys, "bob"), base + filepath.Join(keys, "stranger")
}

func sshURL(addr string) string { return "ssh://git@" + addr + "/hello.git" }

func TestSSHPushWithAnAuthorizedKeyDeploys(t *testing.T) {
	d := newDaemon(t, "")
	addr, bob, stranger := sshSetup(t, d)
	r := newAppRepo(t)

	push := func(sshCmd string) (string, error) {
		cmd := exec.Command("git", "push", sshURL(addr), "main")
		cmd.Dir = r.dir
		cmd.Env = append(os.Environ(), "GIT_SSH_COMMAND="+sshCmd)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := push(stranger); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("unknown key: %v\n%s", err, out)
	}
	if d.branch() != "" {
		t.Fatal("an unknown key wrote the branch")
	}
	if !strings.Contains(d.log.String(), `msg="ssh: key not authorized" peer=127.0.0.1:`) {
		t.Fatalf("failed authentication not logged with the peer:\n%s", d.log)
	}
	out, err := push(bob)
	if err != nil || !strings.Contains(out, "remote: -----> Deployed v1") {
		t.Fatalf("push over ssh: %v\n%s", err, out)
	}
	d.serves("v1")
	if p := d.release("v1")["pusher"]; p != "bob@laptop" {
		t.Fatalf("pusher %v, want the key's comment", p)
	}
	// The same rejection as over HTTP.
	r.commit("broken", map[string]string{"broken.go": "package main\nnope\n"})
	if out, err := push(bob); err == nil || !strings.Contains(out, "[remote rejected] main -> main (deploy failed: build") {
		t.Fatalf("broken push over ssh: %v\n%s", err, out)
	}
	// fetch works too.
	clone := filepath.Join(t.TempDir(), "c")
	cmd := exec.Command("git", "clone", "-q", sshURL(addr), clone)
	cmd.Env = append(os.Environ(), "GIT_SSH_COMMAND="+bob)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clone over ssh: %v\n%s", err, out)
	}
}

func TestSSHRefusesShellsCommandsAndPaths(t *testing.T) {
	d := newDaemon(t, "")
	addr, bob, _ := sshSetup(t, d)
	host, port := strings.Split(addr, ":")[0], strings.Split(addr, ":")[1]
	for name, c := range map[string]struct{ args, want string }{
		"no command":     {"", "no shell here"},
		"a shell":        {"sh -c id", "only git-receive-pack and git-upload-pack are allowed"},
		"path traversal": {"git-receive-pack '../../etc/passwd'", "is not an app"},
		"absolute path":  {"git-upload-pack '/etc/passwd'", "is not an app"},
		"unknown app":    {"git-receive-pack 'other.git'", `no app "other" here`},
	} {
		args := append(strings.Fields(bob)[1:], "-p", port, "git@"+host)
		if c.args != "" {
			args = append(args, c.args)
		} else {
			args = append(args, "-T")
		}
		out, err := exec.Command("ssh", args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
	if !strings.Contains(d.log.String(), `msg="ssh: refused" peer=127.0.0.1:`) {
		t.Fatalf("refusals not logged with the peer:\n%s", d.log)
	}
}
