package fleet

import (
	"bytes"
	"io"
	"sync"
)

// Lines is the output of a rollout, shared by every host's progress: each
// host's lines go out whole and prefixed with its name ("web2: -----> …"),
// and lines of the rollout itself go out as they are. Hosts may write at
// once (a batch goes live in parallel).
type Lines struct {
	mu  sync.Mutex
	out io.Writer
}

// NewLines writes to out.
func NewLines(out io.Writer) *Lines { return &Lines{out: out} }

// Write writes b as it is.
func (l *Lines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.out.Write(b)
}

// Host is a writer of host's lines.
func (l *Lines) Host(name string) io.Writer { return &hostLines{l: l, prefix: name + ": "} }

type hostLines struct {
	l      *Lines
	prefix string
	buf    []byte // an unfinished line
}

func (h *hostLines) Write(b []byte) (int, error) {
	h.buf = append(h.buf, b...)
	var out []byte
	for {
		i := bytes.IndexByte(h.buf, '\n')
		if i < 0 {
			break
		}
		out = append(out, h.prefix...)
		out = append(out, h.buf[:i+1]...)
		h.buf = h.buf[i+1:]
	}
	if len(out) > 0 {
		if _, err := h.l.Write(out); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
