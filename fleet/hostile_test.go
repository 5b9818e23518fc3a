package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestAPartOpenedIsTheOneVerified: once Open verified a part, a PUT that
// appends to it (at the offset the peer holds, as a buggy or hostile
// sender may while the release is made) changes neither what the file
// returned reads nor what its name holds: the bytes unpacked, and those
// git reads from a bundle by its name, are the bytes checked.
func TestAPartOpenedIsTheOneVerified(t *testing.T) {
	peer := newTestPeer(t, 64<<20, nil)
	path, p, data := randomFile(t, PartBundle, 100<<10)
	if err := peer.client().Upload(context.Background(), peer.srv.URL, "web", "s1", path, p); err != nil {
		t.Fatal(err)
	}
	f, err := peer.staging.Open("web", "s1", p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	code, body := peer.request(t, http.MethodPut, IncomingPath("web", "s1", PartBundle)+fmt.Sprintf("?offset=%d", p.Size), []byte("UNVERIFIED"))
	t.Logf("a PUT after Open: HTTP %d %s", code, strings.TrimSpace(body))
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("the part opened reads %d bytes, %d verified", len(got), len(data))
	}
	byName, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(byName, data) {
		t.Fatalf("the part's name holds %d bytes, %d verified", len(byName), len(data))
	}
}

// TestOpenOfAPartStillComingFailsAtOnce: a part a PUT is still writing
// (its body trickling) is not taken, and Open says why rather than wait
// for the trickle or verify a moving file.
func TestOpenOfAPartStillComingFailsAtOnce(t *testing.T) {
	peer := newTestPeer(t, 64<<20, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(peer.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT %s?offset=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\nabc",
		IncomingPath("web", "s1", PartTree), testToken)
	deadline := time.Now().Add(5 * time.Second)
	for peer.held(t, "s1", PartTree) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the trickle never arrived")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	_, err = peer.staging.Open("web", "s1", Part{Name: PartTree, Size: 3, SHA256: "x"})
	if !errors.Is(err, ErrReceiving) || time.Since(start) > time.Second {
		t.Fatalf("open of a part still coming: %v after %s", err, time.Since(start))
	}
}

// TestShipmentsInFlightAreBounded: each part of a shipment is bounded
// (Limit), but not how many shipments an app holds at once: a peer that
// starts a new shipment id on every attempt (a buggy retry loop, or a
// compromised peer) stages Limit bytes per part per id, and Sweep removes
// them only after an hour, and only when a manifest arrives. Ten shipments
// of a part each at its limit should not all be held.
func TestShipmentsInFlightAreBounded(t *testing.T) {
	t.Skip("FINDING (low, disk exhaustion by an authenticated peer): Staging bounds each part (2*git.max_release_size+64MiB for a tree, git.max_pack_size for a bundle) but not the number of shipments held per app nor their total, and sweeps them only on a manifest after an hour: a peer can fill data_dir with shipment ids it never finishes")
	const limit = 1 << 20
	peer := newTestPeer(t, limit, nil)
	data := bytes.Repeat([]byte("x"), limit)
	refused := 0
	for i := range 10 {
		code, _ := peer.request(t, http.MethodPut, IncomingPath("web", fmt.Sprint("s", i), PartTree)+"?offset=0", data)
		if code != http.StatusOK {
			refused++
		}
	}
	if refused == 0 {
		t.Fatalf("ten shipments of %d bytes each held at once", limit)
	}
}
