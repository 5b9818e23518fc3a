package control

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// message is one line of a streamed answer, and the body of an error reply.
type message struct {
	Out   string `json:"out,omitempty"`
	OK    bool   `json:"ok,omitempty"`
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
}

// failure is the message that reports err.
func failure(err error) message {
	code, _ := codeOf(err)
	return message{Error: err.Error(), Code: code}
}

// Reply answers with v as JSON, or with err and the status its code carries.
func Reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		_, status := codeOf(err)
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(failure(err))
		return
	}
	json.NewEncoder(w).Encode(v)
}

// Decode reads the request's JSON body into v. If it cannot, it answers
// 400 with an ErrBadRequest and returns false.
func Decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		Reply(w, nil, fmt.Errorf("%w: %v", ErrBadRequest, err))
		return false
	}
	return true
}

// Stream runs op, sending what it writes as {"out"} messages as they come,
// then {"ok": true} or its error with the error's code. When Stream returns
// the whole answer has been sent. The answer's header goes out at once,
// before op writes anything: a client can tell a daemon that answers, and
// works, from one that took the connection and never will.
func Stream(w http.ResponseWriter, op func(out io.Writer) error) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	sw := &messageWriter{enc: json.NewEncoder(w), flush: func() { _ = rc.Flush() }, deadline: func() {
		// A client that stops reading must not hold the operation's output forever.
		_ = rc.SetWriteDeadline(time.Now().Add(clientWriteTimeout))
	}}
	defer rc.SetWriteDeadline(time.Time{}) // the connection may serve another request
	if err := op(sw); err != nil {
		sw.send(failure(err))
		return
	}
	sw.send(message{OK: true})
}

// clientWriteTimeout bounds one write to a client of the control socket.
const clientWriteTimeout = 30 * time.Second

// messageWriter turns each write into an {"out"} message; writes may come
// from several goroutines.
type messageWriter struct {
	mu       sync.Mutex
	enc      *json.Encoder
	flush    func()
	deadline func()
}

func (m *messageWriter) Write(b []byte) (int, error) {
	if err := m.send(message{Out: string(b)}); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (m *messageWriter) send(msg message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.deadline()
	if err := m.enc.Encode(msg); err != nil {
		return err
	}
	m.flush()
	return nil
}
