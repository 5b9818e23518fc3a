package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Part is one file of a shipment: its name (PartTree or PartBundle), size
// and sha256 (lowercase hex).
type Part struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// The parts a shipment may hold.
const (
	PartTree   = "tree.tar"
	PartBundle = "repo.bundle"
)

// ErrChecksum means a staged part is not the file its sender described.
var ErrChecksum = errors.New("checksum mismatch")

// Describe is the Part of the file at path, named name (its size and
// sha256, reading the file once).
func Describe(name, path string) (Part, error) {
	f, err := os.Open(path)
	if err != nil {
		return Part{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return Part{}, fmt.Errorf("reading %s: %w", path, err)
	}
	return Part{Name: name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// IncomingPath is where a peer holds part of app's shipment id: GET asks
// how many bytes it holds, PUT appends.
func IncomingPath(app, id, part string) string {
	return "/_fleet/v1/apps/" + app + "/incoming/" + id + "/" + part
}

var shipmentIDRE = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)

// checkNames refuses the names that could leave the staging directory or
// that no sender uses; they come from the network.
func checkNames(app, id, part string) error {
	switch {
	case app == "" || app == "." || app == ".." || strings.ContainsAny(app, `/\`):
		return fmt.Errorf("bad app name %q", app)
	case !shipmentIDRE.MatchString(id):
		return fmt.Errorf("bad shipment id %q: want [a-z0-9-]{1,64}", id)
	case part != PartTree && part != PartBundle:
		return fmt.Errorf("bad part %q: want %s or %s", part, PartTree, PartBundle)
	}
	return nil
}

// sizeReply is what the peer answers a GET, a PUT and a 409 with: the
// bytes it holds.
type sizeReply struct {
	Size int64 `json:"size"`
}

// Upload sends the file at path, described by p, to the peer at url as
// part p.Name of shipment id (a random name chosen by the sender,
// [a-z0-9-]{1,64}) of app, resuming where the peer's copy ends: it asks the
// peer how many bytes it holds (GET), sends the rest (PUT ?offset=N), and
// on a connection error or HTTP 5xx asks again and goes on from there, up
// to 5 attempts in a row without progress, with a short backoff (honour
// ctx). A peer that holds more than p.Size bytes, or answers 4xx other than
// 409, fails it at once. 409 means the offset did not match: ask again. The
// file is streamed from disk, never held in memory.
func (c *Client) Upload(ctx context.Context, url, app, id, path string, p Part) error {
	if err := c.upload(ctx, url, app, id, path, p); err != nil {
		return fmt.Errorf("upload of %s (%s of shipment %s of %s) to %s: %w", path, p.Name, id, app, url, err)
	}
	return nil
}

func (c *Client) upload(ctx context.Context, url, app, id, path string, p Part) error {
	if err := checkNames(app, id, p.Name); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != p.Size {
		return fmt.Errorf("the file has %d bytes, its description %d: it changed since it was described", fi.Size(), p.Size)
	}
	u := &upload{c: c, hc: c.Unbounded(), url: url, path: IncomingPath(app, id, p.Name), f: f, size: p.Size}
	return u.run(ctx)
}

// Unbounded is c.HTTP without its overall timeout, which would cut any
// upload of hundreds of MB, or a streamed operation that runs a deploy:
// the caller's ctx bounds it instead.
func (c *Client) Unbounded() *http.Client {
	if c.HTTP == nil {
		return &http.Client{}
	}
	hc := *c.HTTP
	hc.Timeout = 0
	return &hc
}

// Upload's patience: attempts in a row without progress, and the first
// pause between them, doubled after each (up to uploadMaxPause): 7.5s in
// all, for a peer that restarts or a network that blinks, not one that is
// down.
const (
	uploadAttempts = 5
	uploadPause    = 500 * time.Millisecond
	uploadMaxPause = 5 * time.Second
)

// upload is one file on its way to one peer.
type upload struct {
	c    *Client
	hc   *http.Client
	url  string
	path string // IncomingPath on the peer
	f    *os.File
	size int64
}

// retryable marks a failure after which asking the peer again may help: a
// broken connection, a 5xx, an offset the peer did not expect.
type retryable struct{ error }

func (e retryable) Unwrap() error { return e.error }

func canRetry(err error) bool {
	var r retryable
	return errors.As(err, &r)
}

// run makes attempts until the peer holds the whole file, or until
// uploadAttempts in a row leave it holding no more than before.
func (u *upload) run(ctx context.Context) error {
	most, misses := int64(-1), 0
	for {
		held, err := u.attempt(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err() // rather than the broken connection it caused
		}
		if !canRetry(err) {
			return err
		}
		if held > most {
			most, misses = held, 0 // the peer holds more than ever: progress
		}
		misses++
		if misses >= uploadAttempts {
			return fmt.Errorf("%d attempts in a row without progress, the last: %w", misses, err)
		}
		if err := sleep(ctx, u.c.pause(misses)); err != nil {
			return err
		}
	}
}

// pause is how long to wait after the nth attempt in a row without
// progress.
func (c *Client) pause(n int) time.Duration {
	d := c.retryPause
	if d == 0 {
		d = uploadPause
	}
	for ; n > 1 && d < uploadMaxPause; n-- {
		d *= 2
	}
	return min(d, uploadMaxPause)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// attempt asks the peer how much it holds and sends the rest: nil once the
// peer holds the whole file. held is what the peer said it held before (-1
// if it did not say), for run to see progress.
func (u *upload) attempt(ctx context.Context) (held int64, err error) {
	held, err = u.held(ctx)
	if err != nil {
		return -1, err
	}
	switch {
	case held > u.size:
		return held, fmt.Errorf("the peer holds %d bytes, more than the %d of the file", held, u.size)
	case held == u.size:
		return held, nil
	}
	after, err := u.send(ctx, held)
	if err == nil && after != u.size {
		err = retryable{fmt.Errorf("the peer holds %d of the %d bytes after they were sent", after, u.size)}
	}
	return held, err
}

// held asks the peer how many bytes of the file it holds.
func (u *upload) held(ctx context.Context) (int64, error) {
	req, err := u.c.newRequest(ctx, http.MethodGet, u.url, u.path, nil)
	if err != nil {
		return 0, err
	}
	return u.exchange(req)
}

// send sends the file from offset on, and returns how many bytes the peer
// holds then.
func (u *upload) send(ctx context.Context, offset int64) (int64, error) {
	src := &sourceReader{r: io.NewSectionReader(u.f, offset, u.size-offset)}
	req, err := u.c.newRequest(ctx, http.MethodPut, u.url, u.path+"?offset="+strconv.FormatInt(offset, 10), src)
	if err != nil {
		return 0, err
	}
	req.ContentLength = u.size - offset
	// The peer refuses a wrong offset or a part over its limit before it
	// reads the body: with 100-continue, the body is not sent for nothing.
	req.Header.Set("Expect", "100-continue")
	n, err := u.exchange(req)
	if rerr := src.failed(); rerr != nil {
		return 0, fmt.Errorf("reading %s: %w", u.f.Name(), rerr) // this host's fault: asking again will not help
	}
	return n, err
}

// exchange sends req and reads the size the peer answers with.
func (u *upload) exchange(req *http.Request) (int64, error) {
	resp, err := u.c.send(u.hc, req)
	switch {
	case errors.Is(err, ErrUnauthorized):
		return 0, err
	case err != nil:
		return 0, retryable{err}
	case resp.StatusCode == http.StatusRequestEntityTooLarge:
		return 0, fmt.Errorf("the peer refuses a file this large: %w", refused(resp))
	case resp.StatusCode == http.StatusConflict || resp.StatusCode >= 500:
		return 0, retryable{refused(resp)}
	case resp.StatusCode != http.StatusOK:
		return 0, refused(resp)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return 0, retryable{fmt.Errorf("reading the answer: %w", err)}
	}
	var r sizeReply
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, fmt.Errorf("the peer's answer %q: %w", b, err)
	}
	return r.Size, nil
}

// sourceReader keeps the error of reading the local file, which the HTTP
// client reports as a broken request like any other. The client may still
// read it after the peer answered (an early 409), hence the lock.
type sourceReader struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (s *sourceReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if err != nil && err != io.EOF {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}
	return n, err
}

func (s *sourceReader) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Staging is the receiving side: it keeps incoming parts under
// Dir(app)/ID/PART until the shipment is taken (Open, then Remove) or
// swept.
type Staging struct {
	// Dir is where app's incoming shipments are kept (created 0700 if
	// missing); an error (unknown app) answers 404.
	Dir func(app string) (string, error)
	// Limit is the most bytes part may hold for app (nil: no limit).
	Limit func(app, part string) int64

	mu    sync.Mutex
	locks map[string]*fileLock // by file, while a writer holds or awaits it
}

// stagingStall is how long a PUT may wait for one read of its body: a
// sender that vanished without a reset must not hold its part's lock (and
// a connection) forever. As git.stall_timeout's default.
const stagingStall = time.Minute

// Handler serves IncomingPath: GET answers {"size": N}, the bytes held (0
// when nothing yet); PUT ?offset=N appends the body if N is the size held,
// else answers 409 with {"size": held}, and 413 if the part would hold more
// than Limit. The bytes received before a broken body stay, so the next
// attempt resumes.
func (s *Staging) Handler() http.Handler {
	const pattern = "/_fleet/v1/apps/{app}/incoming/{id}/{part}"
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pattern, s.serveHeld)
	mux.HandleFunc("PUT "+pattern, s.serveAppend)
	return mux
}

func (s *Staging) serveHeld(w http.ResponseWriter, r *http.Request) {
	file, ok := s.target(w, r)
	if !ok {
		return
	}
	held, err := sizeOf(file)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	replySize(w, http.StatusOK, held)
}

func (s *Staging) serveAppend(w http.ResponseWriter, r *http.Request) {
	file, ok := s.target(w, r)
	if !ok {
		return
	}
	offset, err := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	if err != nil || offset < 0 {
		http.Error(w, "offset: want the size held, a number of bytes", http.StatusBadRequest)
		return
	}
	if r.ContentLength < 0 {
		http.Error(w, "a Content-Length is required", http.StatusLengthRequired)
		return
	}
	app, part := r.PathValue("app"), r.PathValue("part")
	if limit, ok := s.limit(app, part); ok && r.ContentLength > limit-offset {
		msg := fmt.Sprintf("%s of %s may hold at most %d bytes, not %d", part, app, limit, offset+r.ContentLength)
		http.Error(w, msg, http.StatusRequestEntityTooLarge)
		return
	}
	unlock, err := s.lock(r.Context(), file)
	if err != nil {
		return // the sender is gone
	}
	defer unlock()
	body := &stallReader{r: r.Body, rc: http.NewResponseController(w)}
	held, err := appendAt(file, offset, body)
	switch {
	case errors.Is(err, errOffset):
		replySize(w, http.StatusConflict, held)
	case err != nil:
		msg := fmt.Sprintf("%v (%d bytes held: send the rest)", err, held)
		http.Error(w, msg, http.StatusInternalServerError)
	default:
		replySize(w, http.StatusOK, held)
	}
}

// target is the file the request names, once its names are checked and
// its app known; otherwise it answers why not.
func (s *Staging) target(w http.ResponseWriter, r *http.Request) (string, bool) {
	app, id, part := r.PathValue("app"), r.PathValue("id"), r.PathValue("part")
	if err := checkNames(app, id, part); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return "", false
	}
	dir, err := s.Dir(app)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return "", false
	}
	return filepath.Join(dir, id, part), true
}

func (s *Staging) limit(app, part string) (int64, bool) {
	if s.Limit == nil {
		return 0, false
	}
	return s.Limit(app, part), true
}

func replySize(w http.ResponseWriter, code int, size int64) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(sizeReply{Size: size})
}

// sizeOf is the size of file, 0 if there is none yet.
func sizeOf(file string) (int64, error) {
	fi, err := os.Stat(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return fi.Size(), nil
}

// errOffset means a PUT's offset is not the size held.
var errOffset = errors.New("the offset is not the size held")

// appendAt appends body to file if file holds offset bytes (else errOffset)
// and returns the size it holds then. The caller holds file's lock.
func appendAt(file string, offset int64, body io.Reader) (int64, error) {
	f, err := openAppend(file, offset)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, errOffset // nothing held, and offset > 0
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Size() != offset {
		return fi.Size(), errOffset
	}
	n, err := io.Copy(f, body)
	if err != nil {
		return offset + n, fmt.Errorf("receiving: %w", err)
	}
	if err := f.Close(); err != nil {
		return offset + n, err
	}
	return offset + n, nil
}

// openAppend opens file to append, creating it (and its shipment's
// directory) only for a PUT at offset 0: a later offset needs the file.
func openAppend(file string, offset int64) (*os.File, error) {
	flags := os.O_WRONLY | os.O_APPEND
	if offset == 0 {
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			return nil, err
		}
		flags |= os.O_CREATE
	}
	return os.OpenFile(file, flags, 0o600)
}

// fileLock serializes the writers of one file. A channel rather than a
// mutex, so that a writer's wait ends with its request.
type fileLock struct {
	ch    chan struct{}
	users int // holding or waiting
}

// lock waits until no other writer holds file, or ctx ends.
func (s *Staging) lock(ctx context.Context, file string) (unlock func(), err error) {
	s.mu.Lock()
	if s.locks == nil {
		s.locks = map[string]*fileLock{}
	}
	l := s.locks[file]
	if l == nil {
		l = &fileLock{ch: make(chan struct{}, 1)}
		s.locks[file] = l
	}
	l.users++
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		if l.users--; l.users == 0 {
			delete(s.locks, file)
		}
		s.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// tryLock takes file's lock if no writer holds or awaits it.
func (s *Staging) tryLock(file string) (unlock func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks == nil {
		s.locks = map[string]*fileLock{}
	}
	if s.locks[file] != nil {
		return nil, false
	}
	l := &fileLock{ch: make(chan struct{}, 1), users: 1}
	l.ch <- struct{}{}
	s.locks[file] = l
	return func() {
		<-l.ch
		s.mu.Lock()
		if l.users--; l.users == 0 {
			delete(s.locks, file)
		}
		s.mu.Unlock()
	}, true
}

// stallReader is a request body that may wait at most stagingStall for
// each read, so that a part of any size comes in as long as it keeps
// coming.
type stallReader struct {
	r  io.Reader
	rc *http.ResponseController
}

func (s *stallReader) Read(b []byte) (int, error) {
	_ = s.rc.SetReadDeadline(time.Now().Add(stagingStall)) // not every server can: then no bound
	return s.r.Read(b)
}

// ErrReceiving means a part is being written by a PUT: it cannot be taken
// until that ends.
var ErrReceiving = errors.New("still being received")

// takenSuffix names a part once Open took it: no PUT can reach it, so the
// bytes verified are the bytes read.
const takenSuffix = ".taken"

// Open checks the part held for app's shipment id against p (size, then
// sha256 over the whole file) and returns it opened for reading at offset
// 0; ErrChecksum (wrapped with detail) if they differ, ErrReceiving if a
// PUT is writing it. The part it returns is taken: moved where no PUT
// writes (the file's name changes), so that what was verified is what the
// caller reads, by the file or by its name, until Remove.
func (s *Staging) Open(app, id string, p Part) (*os.File, error) {
	if err := checkNames(app, id, p.Name); err != nil {
		return nil, err
	}
	dir, err := s.Dir(app)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(dir, id, p.Name)
	unlock, ok := s.tryLock(file)
	if !ok {
		return nil, fmt.Errorf("shipment %s of %s: %s: %w", id, app, p.Name, ErrReceiving)
	}
	defer unlock()
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("shipment %s of %s: %w", id, app, err)
	}
	if err := verify(f, p); err != nil {
		f.Close()
		return nil, fmt.Errorf("shipment %s of %s: %w", id, app, err)
	}
	taken := file + takenSuffix
	if err := os.Rename(file, taken); err != nil {
		f.Close()
		return nil, fmt.Errorf("shipment %s of %s: %w", id, app, err)
	}
	// The name the caller may pass on (git reads a bundle by its name).
	g, err := os.Open(taken)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("shipment %s of %s: %w", id, app, err)
	}
	return g, nil
}

// verify checks f against p, and leaves it at offset 0.
func verify(f *os.File, p Part) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != p.Size {
		return fmt.Errorf("%w: %s holds %d bytes, not %d", ErrChecksum, p.Name, fi.Size(), p.Size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != p.SHA256 {
		return fmt.Errorf("%w: %s has sha256 %s, not %s", ErrChecksum, p.Name, sum, p.SHA256)
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}

// Remove deletes shipment id of app.
func (s *Staging) Remove(app, id string) error {
	if !shipmentIDRE.MatchString(id) {
		return fmt.Errorf("bad shipment id %q", id) // it would name another directory
	}
	dir, err := s.Dir(app)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(dir, id)); err != nil {
		return fmt.Errorf("shipment %s of %s: %w", id, app, err)
	}
	return nil
}

// Sweep deletes app's shipments not written for longer than age (leftovers
// of a sender that died). Entries that are not shipments are left alone.
func (s *Staging) Sweep(app string, age time.Duration) error {
	dir, err := s.Dir(app)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing ever came
	}
	if err != nil {
		return err
	}
	cutoff := time.Now().Add(-age)
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || !shipmentIDRE.MatchString(e.Name()) {
			continue
		}
		shipment := filepath.Join(dir, e.Name())
		last, err := lastWrite(shipment)
		if err == nil && last.Before(cutoff) {
			err = os.RemoveAll(shipment)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("sweeping %s: %w", shipment, err))
		}
	}
	return errors.Join(errs...)
}

// lastWrite is when shipment was last written: the newest mtime of its
// directory (a part created) and its parts (a part appended to).
func lastWrite(shipment string) (time.Time, error) {
	fi, err := os.Stat(shipment)
	if err != nil {
		return time.Time{}, err
	}
	last := fi.ModTime()
	entries, err := os.ReadDir(shipment)
	if err != nil {
		return time.Time{}, err
	}
	for _, e := range entries {
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return time.Time{}, err
		}
		if info.ModTime().After(last) {
			last = info.ModTime()
		}
	}
	return last, nil
}
