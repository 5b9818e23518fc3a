package releases

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Status is where a release is in its life.
type Status string

// Release statuses (SPEC §6).
const (
	Building   Status = "building"
	Failed     Status = "failed"
	Live       Status = "live"
	Retired    Status = "retired"
	RolledBack Status = "rolled-back"
	Pruned     Status = "pruned"
)

// Release is the durable metadata of one release.
type Release struct {
	ID       string    `json:"id"`
	Number   int       `json:"number"`
	Revision string    `json:"revision"`
	Branch   string    `json:"branch"`
	Pusher   string    `json:"pusher"`
	Message  string    `json:"message"`
	Created  time.Time `json:"created"`
	// BuildSeconds is the time from checkout to the end of the build.
	BuildSeconds float64 `json:"build_seconds"`
	// BuiltOn names the fleet host that built the release and shipped it
	// here; "" when it was built here.
	BuiltOn string `json:"built_on,omitempty"`
	Status  Status `json:"status"`
	// Reason says why a release failed.
	Reason  string            `json:"reason,omitempty"`
	Start   string            `json:"start"`
	Workers int               `json:"workers"`
	Env     map[string]string `json:"env,omitempty"`
}

// Store is one app's releases on disk. Its methods that change releases
// are safe for one deploy at a time, which the caller guarantees; Record and
// LastEvent are safe for concurrent use.
type Store struct {
	dir string // apps/APP

	mu     sync.Mutex          // guards newest, seq and the appends to the ledger
	newest map[string]ledgered // the newest event of each kind, read once at Open
	seq    int                 // ledger lines seen, to order events of equal time
}

// ledgered is an event and its place in the ledger.
type ledgered struct {
	Event
	seq int
}

// Open returns the store rooted at the app directory, creating its folders,
// and reads the ledger once to learn the newest event of each kind.
func Open(appDir string) (*Store, error) {
	if err := secure(appDir); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{dir: appDir, newest: map[string]ledgered{}}
	events, err := s.History()
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	for _, e := range events {
		s.remember(e)
	}
	return s, nil
}

// Root is the app directory.
func (s *Store) Root() string { return s.dir }

// Dir is the tree of release id.
func (s *Store) Dir(id string) string { return filepath.Join(s.dir, "releases", id) }

// BuildLog is the build log path of release id.
func (s *Store) BuildLog(id string) string {
	return filepath.Join(s.dir, "logs", "builds", id+".log")
}

func (s *Store) metaPath(id string) string { return filepath.Join(s.dir, "releases", id+".json") }

// MaxNumber is the highest release number. Ids come from the network (a
// fleet's peer names the release it ships), and a number near the top of
// int would make the next one overflow.
const MaxNumber = 999_999_999

// ParseID returns N of "vN": exactly as Create names it, "v" and a number
// from 1 to MaxNumber without sign or leading zero, so that an id always
// names one file, never a path ("v1/x", "v1/../..") nor another name of a
// release ("v01", "v+1").
func ParseID(id string) (int, bool) {
	digits, ok := strings.CutPrefix(id, "v")
	if !ok || len(digits) == 0 || len(digits) > 9 || digits[0] == '0' {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil && n > 0 && n <= MaxNumber
}

// checkID refuses a name that is no release id.
func checkID(id string) error {
	if _, ok := ParseID(id); !ok {
		return fmt.Errorf("%q: %w", id, ErrBadID)
	}
	return nil
}

// Create allocates release last+1 (or r.Number, if higher: a fleet
// rollout picks a number free on every host), makes its empty directory
// and saves r with status building. r.ID and r.Number are filled in.
func (s *Store) Create(r *Release) error {
	n := max(s.last()+1, r.Number)
	for {
		if n > MaxNumber {
			return fmt.Errorf("create release: v%d: %w", n, ErrBadID)
		}
		id := "v" + strconv.Itoa(n)
		err := os.Mkdir(s.Dir(id), 0o700) // the daemon's alone until the app's user gets it built
		if errors.Is(err, fs.ErrExist) {
			n++
			continue
		}
		if err != nil {
			return fmt.Errorf("create release: %w", err)
		}
		r.ID, r.Number, r.Status = id, n, Building
		if r.Created.IsZero() {
			r.Created = time.Now().UTC()
		}
		return s.Save(r)
	}
}

// CreateExact is Create of release r.ID exactly (a release shipped by a
// fleet's entry host, under the id it has there); ErrExists if that id is
// taken here.
func (s *Store) CreateExact(r *Release) error {
	n, ok := ParseID(r.ID)
	if !ok {
		return fmt.Errorf("create release: %q: %w", r.ID, ErrBadID)
	}
	if _, err := os.Lstat(s.metaPath(r.ID)); err == nil {
		return fmt.Errorf("create release: %s: %w", r.ID, ErrExists)
	}
	if err := os.Mkdir(s.Dir(r.ID), 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create release: %s: %w", r.ID, ErrExists)
		}
		return fmt.Errorf("create release: %w", err)
	}
	r.Number, r.Status = n, Building
	if r.Created.IsZero() {
		r.Created = time.Now().UTC()
	}
	return s.Save(r)
}

// last is the highest release number on disk, 0 if none.
func (s *Store) last() int {
	entries, _ := os.ReadDir(filepath.Join(s.dir, "releases"))
	max := 0
	for _, e := range entries {
		if n, ok := ParseID(strings.TrimSuffix(e.Name(), ".json")); ok && n > max {
			max = n
		}
	}
	return max
}

// Save writes r's metadata durably.
func (s *Store) Save(r *Release) error {
	if err := checkID(r.ID); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("save %s: %w", r.ID, err)
	}
	return writeFileAtomic(s.metaPath(r.ID), append(b, '\n'), 0o600) // it holds the app's env
}

// Get loads release id.
func (s *Store) Get(id string) (*Release, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(s.metaPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", id, err)
	}
	r := &Release{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("read %s: %w", id, err)
	}
	if r.ID != id {
		// What the file says of itself decides which tree runs and where
		// its metadata is saved: it must be the release asked for.
		return nil, fmt.Errorf("read %s: it holds the metadata of %q", id, r.ID)
	}
	return r, nil
}

// List returns every release with metadata, newest first.
func (s *Store) List() ([]*Release, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, "releases"))
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	var out []*Release
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if _, valid := ParseID(id); !ok || !valid {
			continue
		}
		r, err := s.Get(id)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number > out[j].Number })
	return out, nil
}

// Current is the id the current link names.
func (s *Store) Current() (string, error) {
	t, err := os.Readlink(filepath.Join(s.dir, "current"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", ErrNoCurrent
	}
	if err != nil {
		return "", fmt.Errorf("read current: %w", err)
	}
	return filepath.Base(t), nil
}

// SetCurrent atomically points current at release id.
func (s *Store) SetCurrent(id string) error {
	return symlinkAtomic(filepath.Join("releases", id), filepath.Join(s.dir, "current"))
}

// ClearCurrent removes the current link: no release is live. It undoes the
// first SetCurrent of an app whose cut-over could not complete.
func (s *Store) ClearCurrent() error {
	err := os.Remove(filepath.Join(s.dir, "current"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear current: %w", err)
	}
	return nil
}

// Event is one line of history.jsonl.
type Event struct {
	Time    time.Time `json:"time"`
	Event   string    `json:"event"` // deploy, failure, rollback, reload, cleanup, recover
	Release string    `json:"release,omitempty"`
	From    string    `json:"from,omitempty"`
	By      string    `json:"by"`
	Detail  string    `json:"detail,omitempty"`
	// Seconds is how long the operation took, when it is timed.
	Seconds float64 `json:"seconds,omitempty"`
	// Of is the operation a failure is of: deploy, rollback or reload.
	Of string `json:"of,omitempty"`
	// Phases are the durations of the operation's steps, in seconds, by
	// step (receive, checkout, build, ship, preflight, green); a failure
	// has those that ran.
	Phases map[string]float64 `json:"phases,omitempty"`
}

// Record appends e to the ledger and syncs it. An event that could not be
// written is not remembered by LastEvent either.
func (s *Store) Record(e Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.append(b); err != nil {
		return err
	}
	s.remember(e)
	return nil
}

func (s *Store) remember(e Event) {
	s.seq++
	s.newest[e.Event] = ledgered{Event: e, seq: s.seq}
}

func (s *Store) append(b []byte) error {
	f, err := os.OpenFile(filepath.Join(s.dir, "history.jsonl"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	return nil
}

// LastEvent is the newest ledger event of one of the kinds, or nil. It is
// answered from memory: the ledger is read once, at Open.
func (s *Store) LastEvent(kinds ...string) *Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var newest *ledgered
	for _, k := range kinds {
		if e, ok := s.newest[k]; ok && (newest == nil || e.seq > newest.seq) {
			newest = &e
		}
	}
	if newest == nil {
		return nil
	}
	e := newest.Event
	return &e
}

// History reads the whole ledger, oldest first. A torn last line (a crash
// mid-append) is skipped.
func (s *Store) History() ([]Event, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "history.jsonl"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	var out []Event
	for _, line := range strings.Split(string(b), "\n") {
		var e Event
		if line == "" || json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}
