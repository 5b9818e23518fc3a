package deployer

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/deployer/deployer/internal/escape"
)

// progress writes step lines and indented command output to the pusher and
// to the build log. Writes never fail: a pusher that went away must not stop
// the deploy, and it stops only the pusher's copy. Step and Info lines carry
// commit subjects, pusher names and failure reasons, so their control
// characters are escaped; command output (indented) is the app's own and
// passes as it is.
type progress struct {
	mu     sync.Mutex
	out    io.Writer // the pusher
	outErr error
	log    io.Writer // the build log, once there is a release
}

func newProgress(out io.Writer) *progress {
	if out == nil {
		out = io.Discard
	}
	return &progress{out: out, log: io.Discard}
}

func (p *progress) setLog(w io.Writer) {
	p.mu.Lock()
	p.log = w
	p.mu.Unlock()
}

func (p *progress) write(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, _ = p.log.Write(b)
	if p.outErr == nil {
		_, p.outErr = p.out.Write(b)
	}
}

// Step prints "-----> msg" on one line.
func (p *progress) Step(format string, a ...any) {
	p.write([]byte("-----> " + escape.Controls(fmt.Sprintf(format, a...)) + "\n"))
}

// Info prints an indented line.
func (p *progress) Info(format string, a ...any) {
	p.write([]byte("       " + escape.Controls(fmt.Sprintf(format, a...)) + "\n"))
}

// indented returns a writer that prefixes every line with seven spaces.
func (p *progress) indented() io.Writer { return &indentWriter{p: p, bol: true} }

type indentWriter struct {
	p   *progress
	bol bool
}

func (w *indentWriter) Write(b []byte) (int, error) {
	var out bytes.Buffer
	for _, c := range b {
		if w.bol {
			out.WriteString("       ")
			w.bol = false
		}
		out.WriteByte(c)
		if c == '\n' {
			w.bol = true
		}
	}
	w.p.write(out.Bytes())
	return len(b), nil
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
