package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

func TestSplitNamesTheHostsThatDiffer(t *testing.T) {
	host := func(name, live, rev string) Result {
		return Result{Host: name, State: &Host{Name: name, Apps: []App{{App: "a", Live: live, Revision: rev}}}}
	}
	agree := []Result{host("h1", "v3", "abc"), host("h2", "v3", "abc"), {Host: "h3", Error: "down"}}
	if s := Split(agree); len(s) != 0 {
		t.Fatalf("split of an agreeing fleet: %v", s)
	}
	// The same id with another revision is a split too: ids are per host.
	split := []Result{host("h1", "v3", "abc"), host("h2", "v3", "def"), host("h3", "v2", "abc"), host("h4", "v3", "abc")}
	if s := Split(split); !slices.Equal(s["a"], []string{"h2", "h3"}) {
		t.Fatalf("split: %v", s)
	}
}

func TestHandlerTakesOnlyTheFleetToken(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	srv := httptest.NewServer(Guard(func() string { return "0123456789abcdef" }, statusMux(Host{Name: "me"}), next))
	defer srv.Close()
	c := &Client{Token: "0123456789abcdef"}
	h, err := c.Status(context.Background(), srv.URL)
	if err != nil || h.Name != "me" {
		t.Fatalf("with the token: %+v %v", h, err)
	}
	if _, err := (&Client{Token: "wrong"}).Status(context.Background(), srv.URL); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong token: %v", err)
	}
	if _, err := (&Client{}).Status(context.Background(), srv.URL); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("no token: %v", err)
	}
	resp, err := http.Get(srv.URL + "/hello.git/info/refs")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot {
		t.Fatalf("other paths are not passed on: HTTP %d", resp.StatusCode)
	}
	// An empty token authorizes nothing, even an empty bearer.
	srv2 := httptest.NewServer(Guard(func() string { return "" }, statusMux(Host{}), next))
	defer srv2.Close()
	if _, err := (&Client{}).Status(context.Background(), srv2.URL); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("empty token: %v", err)
	}
}

// statusMux answers StatusPath with h, as a daemon's peer API does.
func statusMux(h Host) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+StatusPath, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(h)
	})
	return mux
}
