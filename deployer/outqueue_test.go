package deployer

import (
	"errors"
	"testing"
)

// TestOutQueueDeliversInOrderAndDrainsOnClose.
func TestOutQueueDeliversInOrderAndDrainsOnClose(t *testing.T) {
	var out syncBuf
	q := newOutQueue(&out)
	for _, s := range []string{"one\n", "two\n", "three\n"} {
		if _, err := q.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	q.close()
	if out.String() != "one\ntwo\nthree\n" {
		t.Fatalf("client got %q", out.String())
	}
}

// stuckWriter never returns from Write until released.
type stuckWriter struct{ release chan struct{} }

func (w stuckWriter) Write(b []byte) (int, error) { <-w.release; return len(b), nil }

// failingWriter is a client that went away.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// TestOutQueueNeverBlocksTheOperation: a client that stops reading is
// detached once it falls outQueueSize writes behind, and one whose writes
// fail is detached too; the writer is never held.
func TestOutQueueNeverBlocksTheOperation(t *testing.T) {
	w := stuckWriter{release: make(chan struct{})}
	q := newOutQueue(w)
	var err error
	for i := 0; i < outQueueSize+2 && err == nil; i++ {
		_, err = q.Write([]byte("x"))
	}
	if !errors.Is(err, errDetached) {
		t.Fatalf("a stuck client was not detached: %v", err)
	}
	close(w.release)
	q.close()

	q = newOutQueue(failingWriter{})
	q.Write([]byte("lost"))
	q.close() // waits until "lost" was tried
	if !q.isDetached() {
		t.Fatal("a client whose write failed is still attached")
	}
}
