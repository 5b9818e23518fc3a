package supervisor

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestExecTail(t *testing.T) {
	cases := map[string]string{
		"./bin/hello":                     "exec ./bin/hello",
		"  node server.js --port 0":       "  exec node server.js --port 0",
		"cd web && ./run":                 "cd web && exec ./run",
		"test -f x || ./run":              "test -f x || exec ./run",
		"export A=1; FOO=bar ./app -v":    "export A=1; FOO=bar exec ./app -v",
		"make setup\n./app":               "make setup\nexec ./app",
		"exec ./app":                      "exec ./app",
		"./a | ./b":                       "./a | ./b",
		"./app &":                         "./app &",
		"for i in 1; do ./app; done":      "for i in 1; do ./app; done",
		"if [ -x a ]; then ./a; fi":       "if [ -x a ]; then ./a; fi",
		"./app; wait":                     "./app; wait",
		"unbalanced 'quote":               "unbalanced 'quote",
		"gunicorn --bind fd://3 app:app ": "exec gunicorn --bind fd://3 app:app ",
	}
	for in, want := range cases {
		if got := execTail(in); got != want {
			t.Errorf("execTail(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWorkerScriptGivesTheAppTheShellsPid runs the real /bin/sh: the app's
// own pid, its LISTEN_PID and the pid the daemon started must be one.
func TestWorkerScriptGivesTheAppTheShellsPid(t *testing.T) {
	for _, start := range []string{
		`sh -c 'echo $$ $LISTEN_PID $FOO'`,
		`true && FOO=x sh -c 'echo $$ $LISTEN_PID $FOO'`,
	} {
		cmd := exec.Command("/bin/sh", "-c", workerScript(start))
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(out))
		pid := strconv.Itoa(cmd.Process.Pid)
		if len(f) < 2 || f[0] != pid || f[1] != pid {
			t.Fatalf("%q: app pid, LISTEN_PID = %v; started pid %s", start, f, pid)
		}
		if strings.Contains(start, "FOO=x") && (len(f) < 3 || f[2] != "x") {
			t.Fatalf("%q: assignment before the command lost: %v", start, f)
		}
	}
}
