package releases

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestParseIDTakesOnlyTheIDsCreateMakes: ids come from the network (a
// fleet peer names the release it ships or wants live); only "vN" as Create
// writes it is one, never a path nor a second name of a release, and never
// a number whose successor overflows.
func TestParseIDTakesOnlyTheIDsCreateMakes(t *testing.T) {
	for id, want := range map[string]int{"v1": 1, "v42": 42, "v999999999": MaxNumber} {
		if n, ok := ParseID(id); !ok || n != want {
			t.Errorf("ParseID(%q) = %d %v, want %d", id, n, ok, want)
		}
	}
	for _, id := range []string{"", "v", "1", "v0", "v01", "v+1", "v-1", "v 1", "v1 ", "V1", "v1/x", "v1/../..",
		"../v1", "v1\x00", "v1.json", "v1000000000", "v999999999999", "v9223372036854775807", "v9223372036854775808", "v١"} {
		if n, ok := ParseID(id); ok {
			t.Errorf("ParseID(%q) = %d, want no id", id, n)
		}
	}
}

// TestGetAndSaveNameOneFileOfTheStore: Get of a name that is no id never
// reads a file (not releases/v1/evil.json that a pushed tree holds, nor one
// outside the store), Get of metadata that says it is another release
// fails, and Save of a release whose id is no id writes nothing: a
// release's id decides which tree runs and where its metadata goes.
func TestGetAndSaveNameOneFileOfTheStore(t *testing.T) {
	root := t.TempDir()
	s, err := Open(filepath.Join(root, "app"))
	if err != nil {
		t.Fatal(err)
	}
	live := &Release{}
	if err := s.Create(live); err != nil {
		t.Fatal(err)
	}
	forged := `{"id": %q, "status": "building", "built_on": "web1", "start": "touch PWNED"}`
	os.WriteFile(filepath.Join(s.Dir(live.ID), "evil.json"), fmt.Appendf(nil, forged, "v1"), 0o644)
	os.WriteFile(filepath.Join(root, "outside.json"), fmt.Appendf(nil, forged, "../../outside"), 0o644)
	for _, id := range []string{"v1/evil", "../../outside", "v01", "v1.json", ""} {
		if r, err := s.Get(id); !errors.Is(err, ErrBadID) || !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %+v, %v; want ErrBadID", id, r, err)
		}
	}
	// v2's metadata says it is v1.
	os.Mkdir(s.Dir("v2"), 0o700)
	os.WriteFile(filepath.Join(s.dir, "releases", "v2.json"), fmt.Appendf(nil, forged, "v1"), 0o600)
	if r, err := s.Get("v2"); err == nil {
		t.Errorf("Get(v2) of v1's metadata = %+v", r)
	}
	for _, id := range []string{"../../outside", "v1/evil", "v01"} {
		if err := s.Save(&Release{ID: id, Status: Failed}); !errors.Is(err, ErrBadID) {
			t.Errorf("Save(%q): %v", id, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "outside.json")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "outside.json")); string(b) != fmt.Sprintf(forged, "../../outside") {
		t.Errorf("outside.json was written: %s", b)
	}
	if r, err := s.Get("v1"); err != nil || r.Status != Building {
		t.Errorf("v1: %+v %v", r, err)
	}
	// A release number past MaxNumber is not made, and leaves no directory.
	if err := s.Create(&Release{Number: MaxNumber + 1}); !errors.Is(err, ErrBadID) {
		t.Errorf("Create past MaxNumber: %v", err)
	}
	if _, err := os.Stat(s.Dir(fmt.Sprint("v", MaxNumber+1))); err == nil {
		t.Error("Create past MaxNumber left a directory")
	}
	if err := s.CreateExact(&Release{ID: "v01"}); !errors.Is(err, ErrBadID) {
		t.Errorf("CreateExact(v01): %v", err)
	}
}
