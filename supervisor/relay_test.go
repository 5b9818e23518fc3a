package supervisor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// countingWriter counts the writes it gets.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) { c.writes++; return c.Buffer.Write(p) }

// TestRelayOutputPrefixesEveryLineInOneWritePerRead: lines that arrive
// together go out in one write, each prefixed; a line longer than the
// buffer is cut, not dropped, and the relay goes on; an unfinished last
// line is not lost; the tail keeps the last lines.
func TestRelayOutputPrefixesEveryLineInOneWritePerRead(t *testing.T) {
	long := strings.Repeat("x", relayBuffer+10)
	in := "one\ntwo\n" + long + "\nthree\nunfinished"
	var log countingWriter
	tail := &tailBuffer{max: 3}
	relayOutput(strings.NewReader(in), &log, "[p] ", tail)
	want := "[p] one\n[p] two\n[p] " + long[:relayBuffer] + "\n[p] x"
	if got := log.String(); !strings.HasPrefix(got, want) {
		t.Fatalf("log starts %q…", got[:min(len(got), 40)])
	}
	if !strings.HasSuffix(log.String(), "[p] three\n[p] unfinished\n") {
		t.Fatalf("log ends …%q", log.String()[max(0, log.Len()-40):])
	}
	if got := strings.Count(log.String(), "x"); got != len(long) {
		t.Fatalf("%d of the long line's %d bytes relayed", got, len(long))
	}
	if log.writes > 4 {
		t.Fatalf("%d writes for four reads", log.writes)
	}
	if got := tail.all(); got[len(got)-1] != "unfinished" || got[len(got)-2] != "three" {
		t.Fatalf("tail %q", got)
	}
}

// TestRelayOutputEndsWithItsReader: an empty pipe that ends writes nothing.
func TestRelayOutputEndsWithItsReader(t *testing.T) {
	var log countingWriter
	relayOutput(io.LimitReader(strings.NewReader(""), 0), &log, "[p] ", &tailBuffer{max: 3})
	if log.writes != 0 {
		t.Fatalf("%d writes", log.writes)
	}
}

// repeatReader is an endless stream of one byte.
type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// TestRelayOutputOfMegabytesWithoutANewline: 10 MiB with no newline is
// relayed whole, in pieces of the buffer's size, without holding it all.
func TestRelayOutputOfMegabytesWithoutANewline(t *testing.T) {
	const size = 10 << 20
	var log countingWriter
	tail := &tailBuffer{max: 2}
	relayOutput(io.LimitReader(repeatReader('x'), size), &log, "[p] ", tail)
	if got := strings.Count(log.String(), "x"); got != size {
		t.Fatalf("%d of %d bytes relayed", got, size)
	}
	if lines, want := strings.Count(log.String(), "\n"), size/relayBuffer; lines != want {
		t.Fatalf("%d pieces, want %d", lines, want)
	}
	for _, l := range tail.all() {
		if len(l) > tailWidth+len("…") {
			t.Fatalf("the tail keeps a %d-byte line", len(l))
		}
	}
}

// slowLog is a worker log whose writes take a while (a busy disk), and
// that tells whether a write was under way, or began, after a moment.
type slowLog struct {
	mu       sync.Mutex
	inFlight int
	writes   int
	after    time.Time // set by the test: a write running then or later is late
	late     int
	data     bytes.Buffer
}

func (l *slowLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.inFlight++
	l.writes++
	l.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
	if !l.after.IsZero() {
		l.late++
	}
	return l.data.Write(p)
}

// TestDetachReturnsOnceTheOutputIsWritten: Detach promises that no
// goroutine of the pool touches the workers any more once it returns,
// and the daemon then exits for its successor: output the relay has read
// from the pipe (it is no longer there for the next daemon) must be in
// the log by then, or it is lost.
func TestDetachReturnsOnceTheOutputIsWritten(t *testing.T) {
	ss := testSockets(t)
	log := &slowLog{}
	spec := testSpec(t, ss, "while :; do echo 0123456789abcdef; sleep 0.001; done", 1)
	spec.Keeper = &memKeeper{fds: map[string]int{}}
	spec.Log = log
	p := startPool(t, spec)
	pid := pidsOf(p)[0]
	defer syscall.Kill(-pid, syscall.SIGKILL)
	waitUntil(t, "output", func() bool { log.mu.Lock(); defer log.mu.Unlock(); return log.writes >= 3 })
	p.Detach()
	log.mu.Lock()
	inFlight := log.inFlight
	log.after = time.Now()
	log.mu.Unlock()
	time.Sleep(200 * time.Millisecond)
	log.mu.Lock()
	defer log.mu.Unlock()
	if inFlight > 0 || log.late > 0 {
		t.Fatalf("after Detach returned: %d writes under way, %d finished later", inFlight, log.late)
	}
}

// TestPreflightOfACrashKeepsItsLastWords: a worker that prints a burst,
// an unfinished last line and exits at once (before the relay's linger
// ends) still has its last lines in the failure, escapes and all: the
// pusher's terminal is protected where they are printed (Info).
func TestPreflightOfACrashKeepsItsLastWords(t *testing.T) {
	ss := testSockets(t)
	spec := testSpec(t, ss, `i=0; while [ $i -lt 500 ]; do echo line $i; i=$((i+1)); done; printf 'fatal: \033[31mbad config\r'; exit 3`, 1)
	err := preflightErr(context.Background(), spec, Probe{HTTPPath: "/", Timeout: 10 * time.Second})
	var pe *PreflightError
	if !errors.As(err, &pe) || len(pe.Output) < 2 {
		t.Fatalf("preflight: %v (%+v)", err, pe)
	}
	if last := pe.Output[len(pe.Output)-1]; last != "fatal: \x1b[31mbad config\r" || pe.Output[len(pe.Output)-2] != "line 499" {
		t.Fatalf("last lines %q", pe.Output[len(pe.Output)-2:])
	}
}
