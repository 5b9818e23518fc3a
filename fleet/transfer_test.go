package fleet

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testToken = "0123456789abcdef"

// testPeer is a peer's staging of app "web", served behind Guard.
type testPeer struct {
	srv     *httptest.Server
	staging *Staging
	root    string // Dir("web") is root/web
}

// newTestPeer serves a Staging whose parts may hold limit bytes, its
// handler wrapped by wrap (if not nil), as the daemon serves it.
func newTestPeer(t *testing.T, limit int64, wrap func(http.Handler) http.Handler) *testPeer {
	t.Helper()
	p := &testPeer{root: t.TempDir()}
	p.staging = &Staging{
		Dir: func(app string) (string, error) {
			if app != "web" {
				return "", fmt.Errorf("no app %q here", app)
			}
			return filepath.Join(p.root, app), nil
		},
		Limit: func(string, string) int64 { return limit },
	}
	h := p.staging.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	p.srv = httptest.NewUnstartedServer(Guard(func() string { return testToken }, h, http.NotFoundHandler()))
	// A cut connection makes net/http log; that is the point, not news.
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	return p
}

func (p *testPeer) client() *Client {
	return &Client{Token: testToken, retryPause: time.Millisecond}
}

// held is the size of the part staged, read on disk.
func (p *testPeer) held(t *testing.T, id, part string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(p.root, "web", id, part))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// request sends a fleet request to the peer by hand and returns its status
// and body.
func (p *testPeer) request(t *testing.T, method, path string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, p.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// randomFile is a file of size random bytes, and its Part.
func randomFile(t *testing.T, name string, size int) (string, Part, []byte) {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Describe(name, path)
	if err != nil {
		t.Fatal(err)
	}
	return path, p, data
}

// mustOpen opens the staged part and checks it holds data.
func mustOpen(t *testing.T, s *Staging, id string, p Part, data []byte) {
	t.Helper()
	f, err := s.Open("web", id, p)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("the staged part differs from the file sent (%d bytes, want %d)", len(got), len(data))
	}
}

func TestDescribe(t *testing.T) {
	_, p, data := randomFile(t, PartBundle, 1000)
	sum := sha256.Sum256(data)
	if p.Name != PartBundle || p.Size != 1000 || p.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("describe: %+v", p)
	}
	if _, err := Describe(PartTree, filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("describe a missing file: %v", err)
	}
}

func TestUploadThenOpenVerifies(t *testing.T) {
	peer := newTestPeer(t, 64<<20, nil)
	path, p, data := randomFile(t, PartTree, 5<<20)
	c := peer.client()
	if err := c.Upload(context.Background(), peer.srv.URL, "web", "s1", path, p); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, peer.staging, "s1", p, data)
	for _, dir := range []string{filepath.Join(peer.root, "web"), filepath.Join(peer.root, "web", "s1")} {
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v %v, want mode 0700", dir, fi.Mode(), err)
		}
	}
	// Once the peer holds it all, an upload again sends nothing.
	if err := c.Upload(context.Background(), peer.srv.URL, "web", "s1", path, p); err != nil {
		t.Fatalf("again: %v", err)
	}
	if err := peer.staging.Remove("web", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(peer.root, "web", "s1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Remove: %v", err)
	}
	if err := peer.staging.Remove("web", "../web"); err == nil {
		t.Fatal("Remove of a bad id: no error")
	}
}

// cutter passes requests on, counting the bytes of every PUT body the
// peer reads, and cuts the connection of the first PUT once cutAfter bytes
// of it were read: hijacked and closed, as a broken network does.
type cutter struct {
	next     http.Handler
	cutAfter int64

	received atomic.Int64 // bytes of PUT bodies read by the peer
	mu       sync.Mutex
	offsets  []string // of each PUT, in order
	first    int64    // bytes read of the first PUT
}

func (c *cutter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		c.next.ServeHTTP(w, r)
		return
	}
	c.mu.Lock()
	c.offsets = append(c.offsets, r.URL.Query().Get("offset"))
	cut := len(c.offsets) == 1
	c.mu.Unlock()
	body := &countingBody{ReadCloser: r.Body, c: c, w: w, cut: cut}
	// A copy: net/http looks at its own request's Body after the handler,
	// to know whether the body was read, and must find its own there.
	r = r.WithContext(r.Context())
	r.Body = body
	c.next.ServeHTTP(w, r)
	if cut {
		c.mu.Lock()
		c.first = body.n
		c.mu.Unlock()
	}
}

type countingBody struct {
	io.ReadCloser
	c   *cutter
	w   http.ResponseWriter
	cut bool
	n   int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.cut && b.n >= b.c.cutAfter {
		conn, _, err := http.NewResponseController(b.w).Hijack()
		if err != nil {
			return 0, err
		}
		conn.Close()
		return 0, errors.New("test: connection cut")
	}
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	b.c.received.Add(int64(n))
	return n, err
}

func TestUploadResumesAfterACut(t *testing.T) {
	var cut *cutter
	peer := newTestPeer(t, 64<<20, func(h http.Handler) http.Handler {
		cut = &cutter{next: h, cutAfter: 1 << 20}
		return cut
	})
	path, p, data := randomFile(t, PartTree, 5<<20)
	if err := peer.client().Upload(context.Background(), peer.srv.URL, "web", "s1", path, p); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, peer.staging, "s1", p, data)
	cut.mu.Lock()
	defer cut.mu.Unlock()
	if len(cut.offsets) != 2 || cut.offsets[0] != "0" {
		t.Fatalf("PUT offsets %v, want 0 then where the cut left the part", cut.offsets)
	}
	if cut.first < cut.cutAfter || cut.first >= p.Size {
		t.Fatalf("the first PUT was cut after %d bytes, want about %d", cut.first, cut.cutAfter)
	}
	// The second PUT goes on from what the peer kept, not from 0: the peer
	// receives the file once, plus what it read but did not keep.
	resumed := cut.offsets[1]
	var kept int64
	if _, err := fmt.Sscan(resumed, &kept); err != nil || kept <= 0 || kept > cut.first {
		t.Fatalf("resumed at %q after %d bytes were received", resumed, cut.first)
	}
	if lost := cut.first - kept; cut.received.Load() > p.Size+lost {
		t.Fatalf("the peer received %d bytes for a file of %d (%d lost in the cut)", cut.received.Load(), p.Size, lost)
	}
}

func TestCorruptedStagedPartFailsOpen(t *testing.T) {
	peer := newTestPeer(t, 64<<20, nil)
	path, p, _ := randomFile(t, PartBundle, 100<<10)
	if err := peer.client().Upload(context.Background(), peer.srv.URL, "web", "s1", path, p); err != nil {
		t.Fatal(err)
	}
	staged := filepath.Join(peer.root, "web", "s1", PartBundle)
	f, err := os.OpenFile(staged, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	if _, err := f.ReadAt(b, 5000); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, 5000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if f, err := peer.staging.Open("web", "s1", p); !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("open of a corrupted part: %v %v", f, err)
	}
	if err := os.Truncate(staged, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.staging.Open("web", "s1", p); !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "holds 10 bytes") {
		t.Fatalf("open of a short part: %v", err)
	}
	if _, err := peer.staging.Open("web", "s2", p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("open of a shipment never sent: %v", err)
	}
}

// liar answers the first GET with a size the peer does not hold, and
// records the offset of each PUT and the peer's status.
type liar struct {
	next http.Handler
	mu   sync.Mutex
	lied bool
	puts []string // "offset status"
}

func (l *liar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	lie := r.Method == http.MethodGet && !l.lied
	l.lied = l.lied || lie
	l.mu.Unlock()
	if lie {
		replySize(w, http.StatusOK, 100)
		return
	}
	rec := &statusRecorder{ResponseWriter: w}
	l.next.ServeHTTP(rec, r)
	if r.Method == http.MethodPut {
		l.mu.Lock()
		l.puts = append(l.puts, fmt.Sprintf("%s %d", r.URL.Query().Get("offset"), rec.code))
		l.mu.Unlock()
	}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets the peer's http.ResponseController reach the connection.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func TestWrongOffsetIsAConflict(t *testing.T) {
	var lie *liar
	peer := newTestPeer(t, 64<<20, func(h http.Handler) http.Handler {
		lie = &liar{next: h}
		return lie
	})
	code, body := peer.request(t, http.MethodPut, IncomingPath("web", "s0", PartTree)+"?offset=7", []byte("abc"))
	if code != http.StatusConflict || strings.TrimSpace(body) != `{"size":0}` {
		t.Fatalf("PUT at a wrong offset: HTTP %d %s", code, body)
	}
	if got := peer.held(t, "s0", PartTree); got != 0 {
		t.Fatalf("a refused PUT left %d bytes", got)
	}

	path, p, data := randomFile(t, PartTree, 300<<10)
	if err := peer.client().Upload(context.Background(), peer.srv.URL, "web", "s1", path, p); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, peer.staging, "s1", p, data)
	lie.mu.Lock()
	defer lie.mu.Unlock()
	if want := []string{"7 409", "100 409", "0 200"}; !slices.Equal(lie.puts, want) {
		t.Fatalf("PUTs %q, want %q", lie.puts, want)
	}
}

func TestConcurrentUploadsOfAPart(t *testing.T) {
	peer := newTestPeer(t, 64<<20, nil)
	path, p, data := randomFile(t, PartTree, 2<<20)
	errs := make(chan error, 3)
	for range cap(errs) {
		go func() { errs <- peer.client().Upload(context.Background(), peer.srv.URL, "web", "s1", path, p) }()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	mustOpen(t, peer.staging, "s1", p, data)
}

func TestUploadOverTheLimitFails(t *testing.T) {
	var puts atomic.Int32
	peer := newTestPeer(t, 1<<20, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut {
				puts.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	path, p, _ := randomFile(t, PartTree, 2<<20)
	err := peer.client().Upload(context.Background(), peer.srv.URL, "web", "s1", path, p)
	if err == nil || !strings.Contains(err.Error(), "HTTP 413") || !strings.Contains(err.Error(), "at most 1048576 bytes") {
		t.Fatalf("upload over the limit: %v", err)
	}
	if n := puts.Load(); n != 1 {
		t.Fatalf("%d PUTs, want 1: a 413 is final", n)
	}
	if got := peer.held(t, "s1", PartTree); got != 0 {
		t.Fatalf("the peer kept %d bytes of a refused part", got)
	}
}

func TestPeerHoldingMoreFailsTheUpload(t *testing.T) {
	peer := newTestPeer(t, 64<<20, nil)
	c := peer.client()
	big, bigPart, _ := randomFile(t, PartTree, 2000)
	if err := c.Upload(context.Background(), peer.srv.URL, "web", "s1", big, bigPart); err != nil {
		t.Fatal(err)
	}
	small, smallPart, _ := randomFile(t, PartTree, 1000)
	err := c.Upload(context.Background(), peer.srv.URL, "web", "s1", small, smallPart)
	if err == nil || !strings.Contains(err.Error(), "holds 2000 bytes, more than the 1000") {
		t.Fatalf("upload to a peer holding more: %v", err)
	}
}

func TestBadNamesAreRefused(t *testing.T) {
	peer := newTestPeer(t, 64<<20, nil)
	for _, tc := range []struct {
		path string
		code int
	}{
		{IncomingPath("web", "Bad_ID", PartTree), http.StatusBadRequest},
		{IncomingPath("web", strings.Repeat("a", 65), PartTree), http.StatusBadRequest},
		{IncomingPath("web", "..%2Fother", PartTree), http.StatusBadRequest},
		{IncomingPath("web", "s1", "etc.tar"), http.StatusBadRequest},
		{IncomingPath("web", "s1", "..%2F..%2Fx"), http.StatusBadRequest},
		{IncomingPath("..%2F..", "s1", PartTree), http.StatusBadRequest},
		{IncomingPath("db", "s1", PartTree), http.StatusNotFound},
		{IncomingPath("web", strings.Repeat("a", 64), PartTree) + "?offset=x", http.StatusBadRequest},
		{IncomingPath("web", "s1", PartBundle) + "?offset=-1", http.StatusBadRequest},
	} {
		for _, method := range []string{http.MethodGet, http.MethodPut} {
			if method == http.MethodGet && strings.Contains(tc.path, "offset") {
				continue // GET takes no offset
			}
			path := tc.path
			if method == http.MethodPut && !strings.Contains(path, "offset") {
				path += "?offset=0"
			}
			if code, body := peer.request(t, method, path, []byte("x")); code != tc.code {
				t.Errorf("%s %s: HTTP %d %s, want %d", method, path, code, body, tc.code)
			}
		}
	}
	entries, _ := os.ReadDir(peer.root)
	if len(entries) != 0 {
		t.Fatalf("refused requests left %d entries in the staging", len(entries))
	}
	path, p, _ := randomFile(t, PartTree, 10)
	if err := peer.client().Upload(context.Background(), peer.srv.URL, "web", "UP", path, p); err == nil || !strings.Contains(err.Error(), "bad shipment id") {
		t.Fatalf("upload with a bad id: %v", err)
	}
}

func TestUploadWithAWrongTokenIsRefused(t *testing.T) {
	peer := newTestPeer(t, 64<<20, nil)
	path, p, _ := randomFile(t, PartTree, 1000)
	err := (&Client{Token: "wrong"}).Upload(context.Background(), peer.srv.URL, "web", "s1", path, p)
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong token: %v", err)
	}
}

// unavailable is a peer that answers every request 503 and counts them.
func unavailable(t *testing.T, seen func(n int32)) *httptest.Server {
	var n atomic.Int32
	srv := httptest.NewServer(Guard(func() string { return testToken }, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen(n.Add(1))
		http.Error(w, "restarting", http.StatusServiceUnavailable)
	}), http.NotFoundHandler()))
	t.Cleanup(srv.Close)
	return srv
}

func TestUploadGivesUpAfterAttemptsWithoutProgress(t *testing.T) {
	var asked atomic.Int32
	srv := unavailable(t, func(n int32) { asked.Store(n) })
	path, p, _ := randomFile(t, PartTree, 1000)
	err := (&Client{Token: testToken, retryPause: time.Millisecond}).Upload(context.Background(), srv.URL, "web", "s1", path, p)
	if err == nil || !strings.Contains(err.Error(), "5 attempts in a row without progress") || !strings.Contains(err.Error(), "HTTP 503: restarting") {
		t.Fatalf("upload to a peer that is down: %v", err)
	}
	if n := asked.Load(); n != uploadAttempts {
		t.Fatalf("asked %d times, want %d", n, uploadAttempts)
	}
}

func TestUploadHonoursItsContext(t *testing.T) {
	path, p, _ := randomFile(t, PartTree, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	var asked atomic.Int32
	srv := unavailable(t, func(n int32) { asked.Store(n); cancel() })
	// The pause after the 503 is longer than any test: only the context
	// can end it.
	c := &Client{Token: testToken, retryPause: time.Hour}
	if err := c.Upload(ctx, srv.URL, "web", "s1", path, p); !errors.Is(err, context.Canceled) {
		t.Fatalf("upload cancelled while pausing: %v", err)
	}
	if n := asked.Load(); n != 1 {
		t.Fatalf("asked %d times, want 1", n)
	}
	if err := c.Upload(ctx, srv.URL, "web", "s1", path, p); !errors.Is(err, context.Canceled) {
		t.Fatalf("upload with a cancelled context: %v", err)
	}
	if n := asked.Load(); n != 1 {
		t.Fatalf("a cancelled upload asked the peer (%d requests)", n)
	}
}

func TestSweepRemovesOnlyOldShipments(t *testing.T) {
	peer := newTestPeer(t, 64<<20, nil)
	dir := filepath.Join(peer.root, "web")
	old := time.Now().Add(-2 * time.Hour)
	mk := func(id string, dirOld, partOld bool) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, id), 0o700); err != nil {
			t.Fatal(err)
		}
		part := filepath.Join(dir, id, PartTree)
		if err := os.WriteFile(part, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if partOld {
			chtimes(t, part, old)
		}
		if dirOld {
			chtimes(t, filepath.Join(dir, id), old)
		}
	}
	mk("old", true, true)
	mk("appended-lately", true, false) // its part was written to lately
	mk("created-lately", false, true)  // a part was added lately
	mk("fresh", false, false)
	mk("Not_A_Shipment", true, true)
	if err := peer.staging.Sweep("web", time.Hour); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{"Not_A_Shipment", "appended-lately", "created-lately", "fresh"}; !slices.Equal(left, want) {
		t.Fatalf("left after the sweep: %v, want %v", left, want)
	}
	if err := peer.staging.Sweep("db", time.Hour); err == nil {
		t.Fatal("sweep of an unknown app: no error")
	}
	if err := (&Staging{Dir: func(string) (string, error) { return filepath.Join(dir, "none"), nil }}).Sweep("web", time.Hour); err != nil {
		t.Fatalf("sweep of an app that never received anything: %v", err)
	}
}

func chtimes(t *testing.T, path string, at time.Time) {
	t.Helper()
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

// The peer's answers are JSON sizes.
func TestHeldIsJSON(t *testing.T) {
	peer := newTestPeer(t, 64<<20, nil)
	code, body := peer.request(t, http.MethodGet, IncomingPath("web", "s1", PartTree), nil)
	var r sizeReply
	if code != http.StatusOK || json.Unmarshal([]byte(body), &r) != nil || r.Size != 0 {
		t.Fatalf("GET of nothing yet: HTTP %d %s", code, body)
	}
	code, body = peer.request(t, http.MethodPut, IncomingPath("web", "s1", PartTree)+"?offset=0", []byte("abc"))
	if code != http.StatusOK || strings.TrimSpace(body) != `{"size":3}` {
		t.Fatalf("PUT: HTTP %d %s", code, body)
	}
	code, body = peer.request(t, http.MethodGet, IncomingPath("web", "s1", PartTree), nil)
	if code != http.StatusOK || strings.TrimSpace(body) != `{"size":3}` {
		t.Fatalf("GET: HTTP %d %s", code, body)
	}
}
