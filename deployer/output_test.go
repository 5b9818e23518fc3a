package deployer

import (
	"bytes"
	"fmt"
	"testing"
)

func TestStepLinesEscapeControlsAndBuildOutputPassesThrough(t *testing.T) {
	var out, log bytes.Buffer
	pr := newProgress(&out)
	pr.setLog(&log)
	subject := "innocent\x1b[2K\r\x1b]0;pwned\a"
	pr.Step("Deploying main as v1: %s", subject)
	pr.Info("failed: %v", fmt.Errorf("start: %s", "web: \x1b[31mboom\u009b"))
	fmt.Fprint(pr.indented(), "\x1b[32mok\x1b[0m\n")
	want := "-----> Deploying main as v1: innocent\\x1b[2K\\r\\x1b]0;pwned\\a\n" +
		"       failed: start: web: \\x1b[31mboom\\u009b\n" +
		"       \x1b[32mok\x1b[0m\n"
	if out.String() != want {
		t.Fatalf("pusher got\n%q\nwant\n%q", out.String(), want)
	}
	if log.String() != want {
		t.Fatalf("build log got\n%q\nwant\n%q", log.String(), want)
	}
}
