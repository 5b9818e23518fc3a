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
		// At the end of the body net/http starts reading the connection
		// in the background to notice a client that goes away; a deadline
		// there would cancel the request while the deploy runs.
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
