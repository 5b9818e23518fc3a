package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testutil"
)

// TestMissingCredentialsFileIsAStartupErrorNamingTheKey is the repro of
// issue 9: a daemon whose tokens_file or authorized_keys is missing used
// to start and then refuse every push. Now serve and check stop, naming the
// key, and a SIGHUP to such a config is rejected while the daemon serves on.
func TestMissingCredentialsFileIsAStartupErrorNamingTheKey(t *testing.T) {
	d := writeDaemonConfig(t, "")
	tokens := filepath.Join(d.dir, "tokens")
	good, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	missingKeys := filepath.Join(d.dir, "authorized_keys")
	withKeys := strings.Replace(string(good), "  lock_timeout: 1m\n",
		"  lock_timeout: 1m\n  ssh_listen: "+freeAddr(t)+"\n  authorized_keys: authorized_keys\n", 1)

	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, daemonBin, append(args, "-c", d.config)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, tc := range []struct {
		name, config, remove, want string
	}{
		{"tokens_file", string(good), tokens, "deployer: git.tokens_file: open " + tokens + ": no such file or directory\n"},
		{"authorized_keys", withKeys, "", "deployer: git.authorized_keys: open " + missingKeys + ": no such file or directory\n"},
	} {
		if err := os.WriteFile(d.config, []byte(tc.config), 0o644); err != nil {
			t.Fatal(err)
		}
		if tc.remove != "" {
			if err := os.Rename(tc.remove, tc.remove+".away"); err != nil {
				t.Fatal(err)
			}
		}
		for _, cmd := range []string{"serve", "check"} {
			out, err := run(cmd)
			if code := exitCode(err); code != 1 || !strings.HasSuffix(out, tc.want) {
				t.Errorf("%s: deployer %s: exit %d, output\n%s\nwant it to end in %q", tc.name, cmd, code, out, tc.want)
			}
		}
		if _, err := os.Stat(d.socket()); err == nil {
			t.Errorf("%s: the refused daemon left a control socket", tc.name)
		}
		if tc.remove != "" {
			if err := os.Rename(tc.remove+".away", tc.remove); err != nil {
				t.Fatal(err)
			}
		}
	}

	// A running daemon keeps its config when a reload names a missing file.
	if err := os.WriteFile(d.config, good, 0o644); err != nil {
		t.Fatal(err)
	}
	d.start()
	t.Cleanup(d.stop)
	if err := os.Remove(tokens); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a reload with a missing tokens_file rejected, naming the key", func() bool {
		return strings.Contains(d.log.String(), `msg="config reload rejected; the running state is unchanged" err="git.tokens_file: open `)
	})
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
