package gitserver

import (
	"io"
	"net"
	"net/http"
	"time"
)

// stallReader is a request body that may wait at most stall for each read,
// so that a push of any size goes through as long as it keeps coming, and
// a client that stops sending does not pin git.
type stallReader struct {
	r       io.Reader
	rc      *http.ResponseController
	stall   time.Duration
	stalled bool // a read waited out stall (net/http then cancels the request)
}

func (s *stallReader) Read(b []byte) (int, error) {
	_ = s.rc.SetReadDeadline(time.Now().Add(s.stall))
	n, err := s.r.Read(b)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		s.stalled = true
	}
	if err != nil {
		// Once the body is in, the client rightly sends nothing while the
		// deploy runs. net/http then reads the connection in the
		// background to notice a client that goes away, and a deadline
		// there would cancel the request: it clears the deadline itself
		// (go1.26 connReader.startBackgroundRead); so do we, not to depend
		// on it.
		_ = s.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// stallWriter is an answer that may wait at most stall for each write;
// cut is called when one waits longer, and must make it return.
type stallWriter struct {
	w     io.Writer
	stall time.Duration
	cut   func()
}

func (s *stallWriter) Write(b []byte) (int, error) {
	t := time.AfterFunc(s.stall, s.cut)
	defer t.Stop()
	return s.w.Write(b)
}
