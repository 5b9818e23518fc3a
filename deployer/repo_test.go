package deployer

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
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
