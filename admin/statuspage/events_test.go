package statuspage

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/releases"
)

// stream reads server-sent events from /events of srv with alice's token.
type stream struct {
	t      *testing.T
	events chan update
	errs   chan error
	body   io.Closer
}

func openStream(t *testing.T, srv *httptest.Server) *stream {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL+"/events", nil)
	req.SetBasicAuth("alice", aliceToken)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("/events: HTTP %d, %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &stream{t: t, events: make(chan update, 16), errs: make(chan error, 1), body: resp.Body}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var event string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "update":
				var u update
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &u); err != nil {
					s.errs <- err
					return
				}
				s.events <- u
			}
		}
		s.errs <- io.EOF
	}()
	return s
}

// next is the next update, within a few seconds.
func (s *stream) next() update {
	s.t.Helper()
	select {
	case u := <-s.events:
		return u
	case err := <-s.errs:
		s.t.Fatalf("the stream ended: %v", err)
	case <-time.After(5 * time.Second):
		s.t.Fatal("no update within 5s")
	}
	return update{}
}

// TestStreamSendsTheSectionsThatChangedWhenTheLedgerIsWritten: the first
// update has every section; after a ledger event, the next has the app's
// sections with the new release, and not the other app's; EndStreams ends
// the stream. The timer is an hour: only the event can cause the update.
func TestStreamSendsTheSectionsThatChangedWhenTheLedgerIsWritten(t *testing.T) {
	f := newFake()
	p, h := newTestPage(t, f, Options{Every: time.Hour})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close) // after the streams' bodies are closed
	s := openStream(t, srv)

	first := s.next()
	if got := strings.Join(first.Order, ","); got != "app-hello,timeline-hello,app-idle,timeline-idle" {
		t.Fatalf("order: %s", got)
	}
	if len(first.HTML) != 4 || !strings.Contains(string(first.HTML["app-hello"]), `data-live="v3"`) {
		t.Fatalf("the first update does not have every section: %v", first.HTML)
	}

	// A deploy of v5: the daemon writes the ledger, then tells the page.
	f.mu.Lock()
	f.releases["hello"] = append([]*releases.Release{{ID: "v5", Number: 5, Revision: "5555555aaaa", Message: "fifth", Status: releases.Live}}, f.releases["hello"]...)
	f.releases["hello"][2].Status = releases.Retired // v3
	f.live["hello"] = "v5"
	e := releases.Event{Time: epoch, Event: "deploy", Release: "v5", From: "v3", By: "carol", Seconds: 1, Phases: map[string]float64{"build": 0.5}}
	f.history["hello"] = append(f.history["hello"], e)
	f.mu.Unlock()
	p.Notify("hello", e)

	u := s.next()
	if _, ok := u.HTML["app-idle"]; ok {
		t.Error("the unchanged app was sent again")
	}
	if !strings.Contains(string(u.HTML["app-hello"]), `data-live="v5"`) {
		t.Errorf("the app's section does not show v5 live:\n%s", u.HTML["app-hello"])
	}
	if tl := string(u.HTML["timeline-hello"]); !strings.Contains(tl, `data-event="deploy" data-release="v5"`) || !strings.Contains(tl, "carol") {
		t.Errorf("the timeline does not show the deploy of v5:\n%s", tl)
	}

	p.EndStreams()
	select {
	case err := <-s.errs:
		if err != io.EOF {
			t.Fatalf("stream: %v", err)
		}
	case u := <-s.events:
		t.Fatalf("an update after EndStreams: %v", u.Order)
	case <-time.After(5 * time.Second):
		t.Fatal("EndStreams did not end the stream")
	}
	// A stream opened after is served as usual.
	if u := openStream(t, srv).next(); len(u.HTML) != 4 {
		t.Fatalf("a stream after EndStreams: %v", u.Order)
	}
}

// TestStreamFollowsWorkersOnItsTimerReadingTheLedgerOnlyWhenWritten: a
// worker that exits has no ledger event; the timer finds it. The ledger
// is not read again for that.
func TestStreamFollowsWorkersOnItsTimerReadingTheLedgerOnlyWhenWritten(t *testing.T) {
	f := newFake()
	_, h := newTestPage(t, f, Options{Every: 20 * time.Millisecond})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close) // after the streams' bodies are closed
	s := openStream(t, srv)
	s.next()
	f.mu.Lock()
	reads := f.histReads
	f.status[0].Workers = f.status[0].Workers[:2] // the draining worker exited
	f.mu.Unlock()
	for {
		u := s.next()
		if html, ok := u.HTML["app-hello"]; ok {
			if strings.Contains(string(html), "3901") {
				continue
			}
			if _, ok := u.HTML["timeline-hello"]; ok {
				t.Error("the timeline was sent again, unchanged")
			}
			break
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.histReads != reads {
		t.Errorf("the ledger was read %d more times with no event", f.histReads-reads)
	}
}
