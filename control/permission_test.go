package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestDialErrorTellsPermissionFromDaemonDown(t *testing.T) {
	const sock = "/run/deployer/deployer.sock"
	dial := func(errno syscall.Errno) error {
		return fmt.Errorf("Get \"http://deployer/v1/status\": %w",
			&net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", errno)})
	}
	cases := []struct {
		name string
		err  error
		is   error
		want string
	}{
		{"socket not open to this user", dial(syscall.EACCES), ErrSocketPermission,
			"permission denied on " + sock + ": run as the daemon's user or root"},
		{"not permitted", dial(syscall.EPERM), ErrSocketPermission,
			"permission denied on " + sock + ": run as the daemon's user or root"},
		{"nobody listens", dial(syscall.ECONNREFUSED), ErrDaemonDown,
			"the deployer daemon is not running: no answer on " + sock},
		{"no socket", dial(syscall.ENOENT), ErrDaemonDown,
			"the deployer daemon is not running: no answer on " + sock},
		{"connection cut", io.ErrUnexpectedEOF, ErrDaemonDown,
			"the deployer daemon is not running: no answer on " + sock},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := dialError(sock, tc.err)
			if !errors.Is(err, tc.is) || err.Error() != tc.want {
				t.Fatalf("got %v, want %q (%v)", err, tc.want, tc.is)
			}
		})
	}
}

// helperDialEnv makes the test binary, run as another user, dial the
// socket it names and print the error.
const helperDialEnv = "DEPLOYER_TEST_DIAL"

func TestHelperProcess(t *testing.T) {
	sock := os.Getenv(helperDialEnv)
	if sock == "" {
		t.Skip("run by TestPermissionDeniedOnTheSocketIsNotDaemonDown")
	}
	_, err := NewClient(sock).Status(context.Background())
	fmt.Printf("uid %d: %v (permission: %t)\n", os.Getuid(), err, errors.Is(err, ErrSocketPermission))
	os.Exit(0)
}

// TestPermissionDeniedOnTheSocketIsNotDaemonDown dials a live daemon's
// 0600 control socket as a user it does not belong to: as root, the test
// binary re-run as nobody (uid 65534); otherwise this user, with the socket
// made 0000. Either way the answer is a permission error, not "the daemon
// is not running".
func TestPermissionDeniedOnTheSocketIsNotDaemonDown(t *testing.T) {
	dir, err := os.MkdirTemp("", "deployer-perm-") // not t.TempDir: nobody must reach it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "deployer.sock")
	ln, err := ListenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	want := "permission denied on " + sock + ": run as the daemon's user or root"

	if os.Geteuid() != 0 {
		if err := os.Chmod(sock, 0); err != nil {
			t.Fatal(err)
		}
		_, err := NewClient(sock).Status(context.Background())
		if !errors.Is(err, ErrSocketPermission) || errors.Is(err, ErrDaemonDown) || err.Error() != want {
			t.Fatalf("got %v, want %q", err, want)
		}
		return
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "control.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestHelperProcess$")
	cmd.Dir = dir
	cmd.Env = []string{helperDialEnv + "=" + sock, "PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as nobody: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "uid 65534: "+want+" (permission: true)" {
		t.Fatalf("helper said %q, want %q", got, want)
	}
}
