package releases

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLastEventIsKeptInMemoryAndSurvivesReopen: LastEvent answers the
// newest event of the kinds asked, after Record and after a fresh Open that
// reads the ledger (skipping a torn last line).
func TestLastEventIsKeptInMemoryAndSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if e := s.LastEvent("deploy"); e != nil {
		t.Fatalf("empty ledger: %+v", e)
	}
	for _, e := range []Event{
		{Event: "deploy", Release: "v1"},
		{Event: "cleanup"},
		{Event: "failure", Release: "v2"},
		{Event: "deploy", Release: "v3"},
		{Event: "stop"},
	} {
		if err := s.Record(e); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *Store) {
		t.Helper()
		if e := s.LastEvent("deploy", "failure"); e == nil || e.Release != "v3" {
			t.Fatalf("last deploy or failure: %+v", e)
		}
		if e := s.LastEvent("failure", "rollback"); e == nil || e.Release != "v2" {
			t.Fatalf("last failure: %+v", e)
		}
		if e := s.LastEvent("rollback"); e != nil {
			t.Fatalf("no rollback was recorded: %+v", e)
		}
	}
	check(s)
	f, err := os.OpenFile(filepath.Join(dir, "history.jsonl"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"event":"deploy","release":"v9"`) // torn by a crash
	f.Close()
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	check(s2)
}

// TestRecordFailureIsReturnedAndNotRemembered: an event the ledger could not
// take is an error, and LastEvent does not pretend it happened.
func TestRecordFailureIsReturnedAndNotRemembered(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "history.jsonl"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.Record(Event{Event: "deploy", Release: "v1"}); err == nil {
		t.Fatal("Record into a directory succeeded")
	}
	if e := s.LastEvent("deploy"); e != nil {
		t.Fatalf("remembered an unwritten event: %+v", e)
	}
}
