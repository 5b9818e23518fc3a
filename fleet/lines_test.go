package fleet

import (
	"strings"
	"sync"
	"testing"
)

// TestLinesPrefixesEachHostsWholeLines: hosts writing at once, in pieces,
// never mix within a line, and each line carries its host.
func TestLinesPrefixesEachHostsWholeLines(t *testing.T) {
	var b strings.Builder
	l := NewLines(&b)
	var wg sync.WaitGroup
	for _, host := range []string{"web2", "web3"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := l.Host(host)
			for range 200 {
				w.Write([]byte("-----> from "))
				w.Write([]byte(host + "\n"))
			}
		}()
	}
	wg.Wait()
	l.Write([]byte("-----> done\n"))
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 401 || lines[400] != "-----> done" {
		t.Fatalf("%d lines, last %q", len(lines), lines[len(lines)-1])
	}
	for _, line := range lines[:400] {
		host, rest, _ := strings.Cut(line, ": ")
		if rest != "-----> from "+host {
			t.Fatalf("mixed line %q", line)
		}
	}
}
