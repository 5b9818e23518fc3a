package deployer

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitOutput(t *testing.T, b *syncBuf, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.String() != want {
		if time.Now().After(deadline) {
			t.Fatalf("followed %q, want %q", b.String(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFollowKeepsEveryLineAcrossRotationAndTruncation: lines written just
// before a rotation are not lost, and the new file is followed from its start.
func TestFollowKeepsEveryLineAcrossRotationAndTruncation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "workers.log")
	os.WriteFile(path, []byte("line0\n"), 0o644)
	var out syncBuf
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- followFile(ctx, path, 0, &out) }()
	waitOutput(t, &out, "line0\n")

	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("line1\n")
	f.Close()
	os.Rename(path, path+".1") // rotated before the follower saw line1
	os.WriteFile(path, []byte("line2\n"), 0o644)
	waitOutput(t, &out, "line0\nline1\nline2\n")

	os.WriteFile(path, []byte("x\n"), 0o644) // truncated and rewritten in place
	waitOutput(t, &out, "line0\nline1\nline2\nx\n")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
