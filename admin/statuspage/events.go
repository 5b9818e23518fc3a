package statuspage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"sync"
	"time"
)

// hub tells every live stream that the ledger changed.
type hub struct {
	mu     sync.Mutex
	subs   map[chan struct{}]struct{}
	ending chan struct{} // closed by end: the streams open now must return
}

func newHub() *hub {
	return &hub{subs: map[chan struct{}]struct{}{}, ending: make(chan struct{})}
}

// subscribe is a stream's: changed has a value after each publish (several
// publishes before it looks are one), ending is closed by end.
func (h *hub) subscribe() (changed <-chan struct{}, ending <-chan struct{}, leave func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[ch] = struct{}{}
	return ch, h.ending, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

// publish tells every stream; it never blocks.
func (h *hub) publish() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- struct{}{}:
		default: // already told
		}
	}
}

// end makes the streams open now return; later ones are not affected.
func (h *hub) end() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.ending)
	h.ending = make(chan struct{})
}

// fragment is a top-level section of the page, rendered.
type fragment struct {
	ID   string
	HTML template.HTML
}

// fragments renders every section of the page: each app's status and its
// timeline.
func (p *Page) fragments() ([]fragment, error) {
	var out []fragment
	for _, app := range p.apps() {
		for _, name := range []string{"app", "timeline"} {
			var b bytes.Buffer
			if err := p.tmpl.ExecuteTemplate(&b, name, app); err != nil {
				return nil, fmt.Errorf("render %s of %s: %w", name, app.Name, err)
			}
			out = append(out, fragment{ID: name + "-" + app.Name, HTML: template.HTML(b.String())})
		}
	}
	return out, nil
}

// update is one server-sent event: the ids of the page's sections in
// order, and the HTML of those that changed since the last update.
type update struct {
	Order []string                 `json:"order"`
	HTML  map[string]template.HTML `json:"html"`
	Now   time.Time                `json:"now"`
}

// writeTimeout bounds each write to a stream: a browser that stopped
// reading does not hold its goroutine.
const writeTimeout = 10 * time.Second

// serveEvents is the live stream (text/event-stream). It sends every
// section at once, then the sections that changed: when the ledger is
// written and every opts.Every (workers have no event); with nothing
// changed, a comment line, which finds a browser that went away.
func (p *Page) serveEvents(w http.ResponseWriter, r *http.Request) {
	changed, ending, leave := p.hub.subscribe()
	defer leave()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no") // nginx: do not hold the events back
	w.WriteHeader(http.StatusOK)
	tick := time.NewTicker(p.opts.Every)
	defer tick.Stop()
	sent := map[string]template.HTML{}
	var order []string
	first := true
	for {
		frags, err := p.fragments()
		if err != nil {
			p.log.Error("status page: live update", "err", err)
			return
		}
		u := update{HTML: map[string]template.HTML{}, Now: p.now().UTC()}
		for _, f := range frags {
			u.Order = append(u.Order, f.ID)
			if sent[f.ID] != f.HTML {
				u.HTML[f.ID] = f.HTML
			}
		}
		clear(sent)
		for _, f := range frags {
			sent[f.ID] = f.HTML
		}
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if first || len(u.HTML) > 0 || !slices.Equal(u.Order, order) {
			b, _ := json.Marshal(u) // one line: JSON escapes newlines
			if first {
				fmt.Fprint(w, "retry: 2000\n")
			}
			_, err = fmt.Fprintf(w, "event: update\ndata: %s\n\n", b)
			order, first = u.Order, false
		} else {
			_, err = fmt.Fprint(w, ":\n\n")
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-ending:
			return
		case <-changed:
		case <-tick.C:
		}
	}
}
