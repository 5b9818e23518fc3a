package supervisor

import (
	"strings"
	"testing"

	"mvdan.cc/sh/v3/syntax"
)

// FuzzExecTailOnlyInsertsExec: whatever START is, execTail returns it
// unchanged or with exactly one "exec " inserted, and what it returns still
// parses whenever START did.
func FuzzExecTailOnlyInsertsExec(f *testing.F) {
	for _, s := range []string{"./bin/hello", "cd web && ./run", "a | b", "FOO=1 ./app", "x; y &", "if a; then b; fi", "'unterminated"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, start string) {
		got := execTail(start)
		if got != start {
			ok := false
			for i := 0; i+len("exec ") <= len(got) && !ok; i++ {
				ok = got[i:i+len("exec ")] == "exec " && got[:i]+got[i+len("exec "):] == start
			}
			if !ok {
				t.Fatalf("execTail(%q) = %q: not START with one exec inserted", start, got)
			}
		}
		if _, err := syntax.NewParser().Parse(strings.NewReader(start), ""); err == nil {
			if _, err := syntax.NewParser().Parse(strings.NewReader(got), ""); err != nil {
				t.Fatalf("execTail(%q) = %q does not parse: %v", start, got, err)
			}
		}
	})
}
