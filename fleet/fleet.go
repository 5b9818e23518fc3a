package fleet

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// StatusPath is where a daemon answers its peers with its Host.
const StatusPath = "/_fleet/v1/status"

// Protocol is the version of what peers say to each other. A host takes a
// shipped release only from a host of the same protocol.
const Protocol = 1

// Host is what one daemon says of itself to its peers.
type Host struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Protocol int    `json:"protocol"`
	// Free is the space left in the host's data_dir, in bytes.
	Free uint64 `json:"free_bytes"`
	Apps []App  `json:"apps"`
}

// App is one app of a host: its live release and the releases on disk.
type App struct {
	App      string `json:"app"`
	Live     string `json:"live,omitempty"`
	Revision string `json:"revision,omitempty"` // the live release's
	Branch   string `json:"branch,omitempty"`   // the deploy branch
	Head     string `json:"head,omitempty"`     // the revision the branch names
	// Next is the lowest release number free on the host: a rollout picks
	// one free on every host, so that the release has the same id
	// everywhere.
	Next     int       `json:"next,omitempty"`
	Releases []Release `json:"releases,omitempty"`
}

// Manifest is what a peer needs to make a release shipped to it: the
// release as the entry host built it, and the checksummed parts it was
// sent as (see Upload).
type Manifest struct {
	Shipment string `json:"shipment"` // the upload's id
	From     string `json:"from"`     // the entry host, for the record
	ID       string `json:"id"`       // the release id, the same on every host
	Revision string `json:"revision"`
	Branch   string `json:"branch"`
	Pusher   string `json:"pusher"`
	Message  string `json:"message"`
	// BuildSeconds is how long the build took on the entry host.
	BuildSeconds float64 `json:"build_seconds"`
	// Ref is the ref in the bundle that names Revision.
	Ref    string `json:"ref"`
	Tree   Part   `json:"tree"`
	Bundle Part   `json:"bundle"`
}

// GoLive asks a peer to put a release it holds live.
type GoLive struct {
	By     string `json:"by"`
	Detail string `json:"detail"`
	// Head is the revision the peer's deploy branch named when the
	// rollout asked it (App.Head): the peer refuses to go live if its
	// branch has moved since to a revision the release does not contain,
	// as a push that waited for the deploy lock does. "": not checked.
	Head string `json:"head,omitempty"`
}

// Abandon tells a peer that the rollout of a release shipped to it
// stopped: the release will never go live there.
type Abandon struct {
	Shipment string `json:"shipment"`
	Why      string `json:"why"`
}

// Release is one release on a host's disk.
type Release struct {
	ID       string `json:"id"`
	Revision string `json:"revision"`
	Status   string `json:"status"`
}

// Peer is another host of the fleet.
type Peer struct {
	Name string
	URL  string // its git HTTP(S) listener, e.g. http://10.0.0.2:7007
}

// Result is one host's answer, or why there is none.
type Result struct {
	Host  string `json:"host"`
	URL   string `json:"url,omitempty"`
	Self  bool   `json:"self,omitempty"`
	State *Host  `json:"state,omitempty"`
	Error string `json:"error,omitempty"`
}

// Guard sends every /_fleet/ request that carries the fleet's token to
// peers, refuses the others, and passes every other path to next. token is
// asked on every request, so that a new secret takes effect without a
// restart; "" refuses every request.
func Guard(token func() string, peers, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/_fleet/") {
			next.ServeHTTP(w, r)
			return
		}
		if !Authorized(r, token()) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="deployer fleet"`)
			http.Error(w, "fleet: a peer's token is required", http.StatusUnauthorized)
			return
		}
		peers.ServeHTTP(w, r)
	})
}

// Authorized reports whether r carries the fleet's token. An empty token
// authorizes nothing.
func Authorized(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// Client asks peers.
type Client struct {
	Token string
	HTTP  *http.Client // default: 5s timeout (never applied to an Upload)

	// retryPause is the first pause of an Upload between attempts (default
	// uploadPause), doubled after each; tests shorten it.
	retryPause time.Duration
}

// ErrUnauthorized means a peer refused the fleet's token.
var ErrUnauthorized = errors.New("the peer refused this host's fleet token (is fleet.token_file the same on both?)")

// Do sends a request to the peer at url (path on its listener), with the
// fleet's token, and returns the response if its status is 200. Requests
// that run a deploy take long: hc must have no overall timeout for them.
func (c *Client) Do(ctx context.Context, hc *http.Client, method, url, path string, body io.Reader) (*http.Response, error) {
	req, err := c.newRequest(ctx, method, url, path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(hc, req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, refused(resp)
	}
	return resp, nil
}

// newRequest is a request to the peer at url (path on its listener) that
// carries the fleet's token.
func (c *Client) newRequest(ctx context.Context, method, url, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(url, "/")+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	return req, nil
}

// send is Do without the status check, for callers that act on other
// answers than 200 (an upload's 409): only a refused token is an error.
func (c *Client) send(hc *http.Client, req *http.Request) (*http.Response, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		resp.Body.Close()
		return nil, ErrUnauthorized
	}
	return resp, nil
}

// refused reads and closes resp, a peer's answer other than 200, and says
// why the peer refused.
func refused(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
}

// Status asks the peer at url what it runs.
func (c *Client) Status(ctx context.Context, url string) (*Host, error) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	resp, err := c.Do(ctx, hc, http.MethodGet, url, StatusPath, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var h Host
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&h); err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	return &h, nil
}

// Gather is self's state and every peer's, asked at once, in the order
// self first, then peers as listed.
func (c *Client) Gather(ctx context.Context, self Host, peers []Peer) []Result {
	out := make([]Result, len(peers)+1)
	out[0] = Result{Host: self.Name, Self: true, State: &self}
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := Result{Host: p.Name, URL: p.URL}
			if h, err := c.Status(ctx, p.URL); err != nil {
				r.Error = err.Error()
			} else {
				r.State = h
			}
			out[i+1] = r
		}()
	}
	wg.Wait()
	return out
}

// Split lists, per app, the hosts whose live release differs from the
// first answering host's: empty when the fleet agrees.
func Split(results []Result) map[string][]string {
	want := map[string]string{}
	out := map[string][]string{}
	for _, r := range results {
		if r.State == nil {
			continue
		}
		for _, a := range r.State.Apps {
			key := a.Live + " " + a.Revision
			if w, ok := want[a.App]; !ok {
				want[a.App] = key
			} else if w != key {
				out[a.App] = append(out[a.App], r.Host)
			}
		}
	}
	return out
}
