package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer/deployer/hooks/gitserver"
)

// TestPushersRestrictWhoMayPushToAndCloneAnApp is the repro of issue 9
// ("any valid token can push to and clone every app"): with
// pushers: [alice, bob@laptop], mallory's valid token and eve's authorized
// key are refused with a one-line reason, for push and clone alike, over
// HTTP and SSH, and nothing is written; alice and bob get through.
func TestPushersRestrictWhoMayPushToAndCloneAnApp(t *testing.T) {
	d := newDaemon(t, "    pushers: [alice, \"bob@laptop\"]\n")
	const malloryToken = "mallory-token"
	tokens := filepath.Join(d.dir, "tokens")
	f, err := os.OpenFile(tokens, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(gitserver.HashToken("mallory", malloryToken) + "\n")
	f.Close()
	addr, bob, eve := sshSetup(t, d)
	// eve's key is authorized for the daemon, but not among hello's pushers.
	evePub, err := os.ReadFile(strings.Fields(eve)[len(strings.Fields(eve))-1] + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := os.OpenFile(filepath.Join(d.dir, "authorized_keys"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	keys.Write(evePub)
	keys.Close()

	r := newAppRepo(t)
	git := func(sshCmd string, args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = r.dir
		cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
		if sshCmd != "" {
			cmd.Env = append(cmd.Env, "GIT_SSH_COMMAND="+sshCmd)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	malloryURL := "http://mallory:" + malloryToken + "@" + d.gitAddr + "/hello.git"
	for _, c := range []struct {
		name, ssh, want string
		args            []string
	}{
		{"mallory pushes over HTTP", "", `remote: pusher "mallory" may not push to or fetch from app hello: it is not in apps.hello.pushers`,
			[]string{"push", malloryURL, "main"}},
		{"mallory clones over HTTP", "", `remote: pusher "mallory" may not push to or fetch from app hello`,
			[]string{"clone", "-q", malloryURL, filepath.Join(t.TempDir(), "m")}},
		{"eve pushes over SSH", eve, `deployer: pusher "eve" may not push to or fetch from app hello: it is not in apps.hello.pushers`,
			[]string{"push", sshURL(addr), "main"}},
		{"eve clones over SSH", eve, `deployer: pusher "eve" may not push to or fetch from app hello`,
			[]string{"clone", "-q", sshURL(addr), filepath.Join(t.TempDir(), "e")}},
	} {
		out, err := git(c.ssh, c.args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%s: %v\n%s\nwant %q", c.name, err, out, c.want)
		}
	}
	if d.branch() != "" {
		t.Fatal("a pusher not admitted wrote the branch")
	}
	for _, want := range []string{`msg="git: pusher not admitted" app=hello pusher=mallory`, `msg="ssh: refused" peer=127.0.0.1:`} {
		if !strings.Contains(d.log.String(), want) {
			t.Errorf("daemon log lacks %q", want)
		}
	}

	r.mustPush(d) // alice
	d.serves("v1")
	if out, err := git(bob, "clone", "-q", sshURL(addr), filepath.Join(t.TempDir(), "b")); err != nil {
		t.Fatalf("bob clones over SSH: %v\n%s", err, out)
	}
}
