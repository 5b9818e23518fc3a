package deployer

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
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
