package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestControlCharactersFromARepositoryReachTheTerminalEscaped is the repro
// of issue 9: a commit subject and a failure reason carrying escape
// sequences (a window title, a line erase) are printed as \x1b... by the
// push, `deployer releases` and `deployer status`, never as raw bytes.
func TestControlCharactersFromARepositoryReachTheTerminalEscaped(t *testing.T) {
	d := newDaemon(t, "")
	r := newAppRepo(t)
	r.mustPush(d)

	// A file name too long for the file system fails the checkout, and the
	// reason quotes it: the reason carries the repository's bytes.
	blob := strings.TrimSpace(hashObject(t, r.dir, "x"))
	long := "\x1b]0;pwned\a" + strings.Repeat("a", 260)
	r.git("update-index", "--add", "--cacheinfo", "100644,"+blob+","+long)
	r.git("commit", "-q", "-m", "innocent\x1b[2K\r\x1b[31mred")

	out, err := r.push(d.url(testToken))
	if err == nil {
		t.Fatalf("push of an unwritable tree accepted:\n%s", out)
	}
	for _, want := range []string{
		`remote: -----> Deploying main`, `pushed by alice: innocent\x1b[2K\r\x1b[31mred`,
		`failed at checkout: checkout: unsafe path in repository: \x1b]0;pwned\aaaa`,
		`(deploy failed: checkout: checkout: unsafe path in repository: \x1b]0;pwned\aaaa`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("push output lacks %q", want)
		}
	}
	noRawControls(t, "push output", out)

	rel := d.mustCLI("releases", "hello")
	// The column is one line (the \r is blank space) and the reason is cut
	// before its file name.
	for _, want := range []string{`innocent\x1b[2K \x1b[31mred`, `failed (checkout: checkout: unsafe path`} {
		if !strings.Contains(rel, want) {
			t.Errorf("deployer releases lacks %q:\n%s", want, rel)
		}
	}
	noRawControls(t, "deployer releases", rel)

	st := d.mustCLI("status", "hello")
	if !strings.Contains(st, `failure v2 by alice`) || !strings.Contains(st, `unsafe path in repository: \x1b]0;pwned…`) {
		t.Errorf("deployer status lacks the escaped failure:\n%s", st)
	}
	noRawControls(t, "deployer status", st)
}

func hashObject(t *testing.T, dir, content string) string {
	t.Helper()
	cmd := exec.Command("git", "hash-object", "-w", "--stdin")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(content)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git hash-object: %v", err)
	}
	return string(out)
}

// noRawControls fails if s holds a control character other than tab and
// newline. git's own progress lines end in \r, so only the escape
// sequences' ESC, BEL and the like count.
func noRawControls(t *testing.T, what, s string) {
	t.Helper()
	for _, c := range []byte(s) {
		if c == 0x1b || c == 0x07 || c == 0x9b {
			t.Errorf("%s holds a raw control byte %#x:\n%q", what, c, s)
			return
		}
	}
}
