package worker_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/worker"
)

func TestListenersRejectsBadEnvironment(t *testing.T) {
	// None of these cases gets as far as touching a descriptor, so they run
	// in the test process itself.
	tests := []struct {
		name    string
		env     map[string]string
		is      error
		message string
	}{
		{"no LISTEN_FDS", map[string]string{}, worker.ErrNoSockets,
			"no inherited sockets: LISTEN_FDS not set; run under deployer"},
		{"zero LISTEN_FDS", map[string]string{"LISTEN_FDS": "0"}, worker.ErrNoSockets, "LISTEN_FDS=0"},
		{"bad LISTEN_FDS", map[string]string{"LISTEN_FDS": "three"}, nil, `bad LISTEN_FDS "three"`},
		{"another process's LISTEN_PID",
			map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": fmt.Sprint(os.Getpid() + 1)},
			worker.ErrNotOurSockets, "must exec the app"},
		{"bad LISTEN_PID", map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "me"}, nil, `bad LISTEN_PID "me"`},
		{"too few LISTEN_FDNAMES",
			map[string]string{"LISTEN_FDS": "2", "LISTEN_FDNAMES": "web", "LISTEN_PID": fmt.Sprint(os.Getpid())},
			nil, "names 1 sockets, LISTEN_FDS=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
				t.Setenv(k, "") // restored after the test
				if v, ok := tt.env[k]; ok {
					os.Setenv(k, v)
				} else {
					os.Unsetenv(k)
				}
			}
			lns, err := worker.Listeners()
			if err == nil {
				t.Fatalf("Listeners() = %v, want an error", lns)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("error %q does not say %q", err, tt.message)
			}
			for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
				if v, ok := os.LookupEnv(k); ok {
					t.Errorf("%s=%q still set", k, v)
				}
			}
		})
	}
}

// runListenersHelper runs the "listeners" helper with files at fd 3… and
// returns its report.
func runListenersHelper(t *testing.T, argv []string, files []*os.File, env ...string) listenersReport {
	t.Helper()
	p := startProc(t, "", argv, files, append(env, helperEnv+"=listeners")...)
	p.wait(t, 30*time.Second)
	var rep listenersReport
	if err := json.Unmarshal(p.stdout.Bytes(), &rep); err != nil {
		t.Fatalf("helper output %q: %v", p.stdout.String(), err)
	}
	return rep
}

func TestListenersTakeInheritedSocketsInOrder(t *testing.T) {
	web, admin := listenTCP(t), listenTCP(t)
	rep := runListenersHelper(t, withListenPID(helperArgv()...),
		[]*os.File{inheritable(t, web), inheritable(t, admin)}, "LISTEN_FDNAMES=web:admin")
	if rep.Err != "" {
		t.Fatalf("Listeners: %s", rep.Err)
	}
	want := []string{web.Addr().String(), admin.Addr().String()}
	if fmt.Sprint(rep.Addrs) != fmt.Sprint(want) {
		t.Errorf("listener addresses %v, want %v (fd 3, fd 4)", rep.Addrs, want)
	}
	for i := range rep.Addrs {
		if !rep.Cloexec[i] {
			t.Errorf("listener %d is not close-on-exec", i)
		}
		if rep.Copies[i] != 1 {
			t.Errorf("listener %d: %d descriptors refer to the socket, want 1 (inherited one left open?)", i, rep.Copies[i])
		}
	}
	if len(rep.EnvLeft) > 0 {
		t.Errorf("still set after Listeners: %v", rep.EnvLeft)
	}
}

func TestListenersRefuseSocketsOfAShellThatDidNotExec(t *testing.T) {
	ln := listenTCP(t)
	// The shell sets LISTEN_PID to its own pid and runs the helper as a
	// child ("; exit" stops it from exec'ing the last command itself).
	argv := append([]string{"/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; "$0" "$@"; exit $?`}, helperArgv()...)
	rep := runListenersHelper(t, argv, []*os.File{inheritable(t, ln)})
	if !strings.Contains(rep.Err, "inherited sockets belong to another process: LISTEN_PID=") {
		t.Fatalf("Listeners error %q, want a LISTEN_PID mismatch", rep.Err)
	}
}

func TestListenersRejectANonSocket(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	rep := runListenersHelper(t, withListenPID(helperArgv()...), []*os.File{r})
	if !strings.Contains(rep.Err, "inherited socket fd 3") {
		t.Fatalf("Listeners error %q, want one naming fd 3", rep.Err)
	}
}
