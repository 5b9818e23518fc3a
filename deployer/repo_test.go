package deployer

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestCheckoutStreamsALargeBlobWithoutHoldingIt: a 64 MiB blob of zeros,
// loose and then packed (a few kilobytes either way), is written to its file
// while the checkout allocates a small part of its size.
func TestCheckoutStreamsALargeBlobWithoutHoldingIt(t *testing.T) {
	const size = 64 << 20
	w := newGitWork(t)
	f, err := os.Create(filepath.Join(w.dir, "zeros"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rev := w.commit("zeros", map[string]string{"Procfile": "web: ./run\n"})
	c, err := w.bare.Commit(rev)
	if err != nil {
		t.Fatal(err)
	}
	for _, layout := range []string{"loose", "packed"} {
		t.Run(layout, func(t *testing.T) {
			if layout == "packed" {
				w.git("--git-dir="+w.bare.Path(), "repack", "-adq")
			}
			dir := t.TempDir()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			if err := w.bare.Checkout(context.Background(), c.Tree, dir, 1<<30); err != nil {
				t.Fatal(err)
			}
			runtime.ReadMemStats(&after)
			if st, err := os.Stat(filepath.Join(dir, "zeros")); err != nil || st.Size() != size {
				t.Fatalf("zeros: %v %v", st, err)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/4 {
				t.Fatalf("the checkout allocated %d MiB for a %d MiB blob", alloc>>20, size>>20)
			}
		})
	}
}

// TestSweepRemovesOnlyQuarantinesNothingWroteTo: the quarantine of a push
// that died long ago goes, with what it holds; one written to just now, as
// a push in progress writes, stays.
func TestSweepRemovesOnlyQuarantinesNothingWroteTo(t *testing.T) {
	w := newGitWork(t)
	objects := filepath.Join(w.bare.Path(), "objects")
	mk := func(name string, age time.Duration) {
		pack := filepath.Join(objects, name, "pack")
		if err := os.MkdirAll(pack, 0o755); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(pack, "tmp_pack_x")
		if err := os.WriteFile(f, []byte("PACK"), 0o644); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-age)
		for _, p := range []string{f, pack, filepath.Join(objects, name)} {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("tmp_objdir-incoming-dead", time.Hour)
	mk("tmp_objdir-incoming-live", time.Hour)
	if err := os.WriteFile(filepath.Join(objects, "tmp_objdir-incoming-live", "pack", "tmp_pack_x"), []byte("PACK more"), 0o644); err != nil {
		t.Fatal(err)
	}
	removed, err := w.bare.SweepQuarantines(StaleQuarantine)
	if err != nil || len(removed) != 1 || removed[0] != "tmp_objdir-incoming-dead" {
		t.Fatalf("removed %v, %v", removed, err)
	}
	left, _ := filepath.Glob(filepath.Join(objects, "tmp_objdir-*"))
	if len(left) != 1 || filepath.Base(left[0]) != "tmp_objdir-incoming-live" {
		t.Fatalf("left %v", left)
	}
}

// packDeltaOnHugeBase writes a pack into w's bare repository holding a
// 64 MiB blob of zeros and a 10-byte blob stored as a delta against it,
// and returns a tree naming only the small one. No git client makes such a
// pack; any pusher can.
func packDeltaOnHugeBase(t *testing.T, w *gitWork) string {
	t.Helper()
	const baseSize = 64 << 20
	header := func(typ byte, size int) []byte {
		b := []byte{typ<<4 | byte(size&15)}
		for size >>= 4; size > 0; size >>= 7 {
			b[len(b)-1] |= 0x80
			b = append(b, byte(size&0x7f))
		}
		return b
	}
	deflate := func(data []byte) []byte {
		var buf bytes.Buffer
		zw := zlib.NewWriter(&buf)
		zw.Write(data)
		zw.Close()
		return buf.Bytes()
	}
	varint := func(n int) []byte {
		var b []byte
		for {
			c := byte(n & 0x7f)
			if n >>= 7; n > 0 {
				b = append(b, c|0x80)
				continue
			}
			return append(b, c)
		}
	}
	var pack bytes.Buffer
	pack.WriteString("PACK")
	binary.Write(&pack, binary.BigEndian, uint32(2))
	binary.Write(&pack, binary.BigEndian, uint32(2))
	baseAt := pack.Len()
	pack.Write(header(3, baseSize)) // blob
	pack.Write(deflate(make([]byte, baseSize)))
	// The delta: source and target sizes, then "copy 10 bytes from offset 0".
	delta := append(append(varint(baseSize), varint(10)...), 0x80|0x10, 10)
	deltaAt := pack.Len()
	pack.Write(header(6, len(delta))) // ofs-delta
	off := deltaAt - baseAt
	enc := []byte{byte(off & 0x7f)}
	for off >>= 7; off > 0; off >>= 7 {
		off--
		enc = append([]byte{0x80 | byte(off&0x7f)}, enc...)
	}
	pack.Write(enc)
	pack.Write(deflate(delta))
	sum := sha1.Sum(pack.Bytes())
	pack.Write(sum[:])

	cmd := exec.Command("git", "--git-dir="+w.bare.Path(), "index-pack", "--stdin")
	cmd.Stdin = &pack
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("index-pack: %v\n%s", err, out)
	}
	small := sha1.Sum(append([]byte("blob 10\x00"), make([]byte, 10)...))
	cmd = exec.Command("git", "--git-dir="+w.bare.Path(), "mktree")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("100644 blob %x\tsmall\n", small))
	tree, err := cmd.Output()
	if err != nil {
		t.Fatalf("mktree: %v", err)
	}
	return strings.TrimSpace(string(tree))
}

// TestCheckoutOfADeltaOnAHugeBaseStaysSmallInTheDaemon: a 10-byte blob
// stored as a delta against 64 MiB of zeros is resolved by git, not in the
// daemon's memory (go-git would read the whole base to apply the delta).
func TestCheckoutOfADeltaOnAHugeBaseStaysSmallInTheDaemon(t *testing.T) {
	w := newGitWork(t)
	tree := packDeltaOnHugeBase(t, w)
	dir := t.TempDir()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := w.bare.Checkout(context.Background(), tree, dir, 1<<20); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if b, err := os.ReadFile(filepath.Join(dir, "small")); err != nil || !bytes.Equal(b, make([]byte, 10)) {
		t.Fatalf("small: %q %v", b, err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Fatalf("the checkout of a 10-byte blob allocated %d MiB", alloc>>20)
	}
}
