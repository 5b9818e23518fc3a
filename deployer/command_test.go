package deployer

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBuildTimeoutKillsTheBuildAndItsChildren: a build that starts a
// background child and hangs is killed with the child at the timeout.
func TestBuildTimeoutKillsTheBuildAndItsChildren(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	start := time.Now()
	err := runShell(context.Background(), dir, "sleep 300 & echo $! > child.pid; echo started; sleep 300", nil, &out, 500*time.Millisecond, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "timed out after 500ms") {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatal("runShell did not return promptly after the timeout")
	}
	b, err := os.ReadFile(filepath.Join(dir, "child.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("background child %d outlived the build", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "started") {
		t.Fatalf("output not captured: %q", out.String())
	}
}

func TestBuildEnvDropsDaemonVariables(t *testing.T) {
	t.Setenv("DEPLOYER_GIT_HTTP_LISTEN", "x")
	t.Setenv("LISTEN_FDS", "9")
	env := strings.Join(commandEnv(map[string]string{"A": "1"}), "\n")
	if strings.Contains(env, "DEPLOYER_GIT_HTTP_LISTEN") || strings.Contains(env, "LISTEN_FDS") || !strings.Contains(env, "A=1") {
		t.Fatalf("env:\n%s", env)
	}
}

func TestCommandEnvDropsDaemonVariablesAndTheGivenPrefixes(t *testing.T) {
	t.Setenv("DEPLOYER_SOCKET", "/run/x.sock")
	t.Setenv("NOTIFY_SOCKET", "/run/notify")
	t.Setenv("GIT_DIR", "/elsewhere")
	t.Setenv("KEEP_ME", "1")
	env := "\n" + strings.Join(CommandEnv("GIT_"), "\n") + "\n"
	for _, gone := range []string{"DEPLOYER_SOCKET=", "NOTIFY_SOCKET=", "GIT_DIR="} {
		if strings.Contains(env, "\n"+gone) {
			t.Errorf("%s kept:%s", gone, env)
		}
	}
	if !strings.Contains(env, "\nKEEP_ME=1\n") {
		t.Errorf("KEEP_ME dropped:%s", env)
	}
	if env := strings.Join(CommandEnv(), "\n"); !strings.Contains(env, "GIT_DIR=/elsewhere") {
		t.Errorf("GIT_DIR dropped without being asked:\n%s", env)
	}
}
