package fdstore

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// keeper runs a keeper in this process for the test's life.
func keeper(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fdstore.sock")
	k, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- k.Serve() }()
	t.Cleanup(func() {
		c, err := Open(path, "/nonexistent")
		if err == nil {
			c.Quit()
		}
		<-done
	})
	return path
}

func TestKeptDescriptorsOutliveTheClientThatPutThem(t *testing.T) {
	path := keeper(t)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keeper socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(path, "/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := ln.(*net.TCPListener).SyscallConn()
	var perr error
	rc.Control(func(fd uintptr) { perr = c.Put("app/x/"+ln.Addr().String(), int(fd)) })
	if perr != nil {
		t.Fatal(perr)
	}
	prc, _ := r.SyscallConn()
	prc.Control(func(fd uintptr) { perr = c.Put("out/x/1", int(fd)) })
	if perr != nil {
		t.Fatal(perr)
	}
	addr := ln.Addr().String()
	// The daemon goes away: its copies close, the keeper's stay.
	c.Close()
	ln.Close()
	r.Close()
	if _, err := w.Write([]byte("still read\n")); err != nil {
		t.Fatalf("write to a pipe whose reader is only the keeper: %v", err)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("connect while only the keeper holds the socket: %v", err)
	}
	conn.Close()

	next, err := Open(path, "/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	got, err := next.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("listed %v, want two entries", got)
	}
	kl, err := net.FileListener(got["app/x/"+addr])
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	if kl.Addr().String() != addr {
		t.Fatalf("kept listener on %s, want %s", kl.Addr(), addr)
	}
	w.Close()
	b, err := io.ReadAll(got["out/x/1"])
	if err != nil || string(b) != "still read\n" {
		t.Fatalf("read the kept pipe: %q %v", b, err)
	}
	// The queued connection waited in the kept socket's accept queue.
	if c, err := kl.Accept(); err != nil {
		t.Fatalf("accept the connection queued meanwhile: %v", err)
	} else {
		c.Close()
	}
}

func TestDelDropsAndBadRequestsAreRefused(t *testing.T) {
	path := keeper(t)
	c, err := Open(path, "/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, w, _ := os.Pipe()
	defer w.Close()
	defer r.Close()
	rc, _ := r.SyscallConn()
	var perr error
	rc.Control(func(fd uintptr) { perr = c.Put("a", int(fd)) })
	if perr != nil {
		t.Fatal(perr)
	}
	rc.Control(func(fd uintptr) { perr = c.Put("bad name", int(fd)) })
	if perr == nil {
		t.Fatal("a name with a space was accepted")
	}
	c.Del("a")
	got, err := c.List()
	if err != nil || len(got) != 0 {
		t.Fatalf("after Del: %v %v", got, err)
	}
}

func TestAKeeperThatGoesAwayIsReplacedAndGivenEverythingAgain(t *testing.T) {
	if os.Getenv("FDSTORE_TEST_KEEPER") != "" {
		return
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "fdstore.sock")
	exe := filepath.Join(dir, "keeper.sh")
	// The keeper is this test binary in keeper mode.
	self, _ := os.Executable()
	os.WriteFile(exe, []byte("#!/bin/sh\nexec env FDSTORE_TEST_KEEPER=1 "+self+" -test.run=TestHelperKeeper -- \"$@\"\n"), 0o755)
	c, err := Open(path, exe)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Quit()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	rc, _ := ln.(*net.TCPListener).SyscallConn()
	var perr error
	rc.Control(func(fd uintptr) { perr = c.Put("sock", int(fd)) })
	if perr != nil {
		t.Fatal(perr)
	}
	logged := make(chan error, 1)
	c.mu.Lock()
	c.Log = func(_ string, err error) { logged <- err }
	c.mu.Unlock()
	// Kill the keeper; the client starts another and re-puts.
	other, err := dial(path)
	if err != nil {
		t.Fatal(err)
	}
	other.WriteMsgUnix([]byte("QUIT"), nil, nil)
	other.Close()
	if err := <-logged; err != nil {
		t.Fatalf("keeper restart: %v", err)
	}
	got, err := c.List()
	if err != nil || got["sock"] == nil {
		t.Fatalf("the new keeper lacks what the old one held: %v %v", got, err)
	}
	for _, f := range got {
		f.Close()
	}
}

// TestHelperKeeper is the keeper process of the test above.
func TestHelperKeeper(t *testing.T) {
	if os.Getenv("FDSTORE_TEST_KEEPER") == "" {
		return
	}
	args := os.Args
	for i, a := range args {
		if a == "--socket" && i+1 < len(args) {
			RunKeeper(args[i+1], os.NewFile(3, "ready"))
			os.Exit(0)
		}
	}
	os.Exit(2)
}

// A keeper whose fd table fills up must refuse new names rather than end
// up unable to accept or to copy what it holds: LIST then sent nothing at
// all (silently), and accept's EMFILE made the keeper exit, closing every
// listener it held, so the next daemon failed with EADDRINUSE.
func TestAFullKeeperRefusesNewNamesAndStillLists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fdstore.sock")
	k, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	k.max = 2
	go k.Serve()
	c, err := Open(path, "/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Quit() }()
	f, _ := os.Open(os.DevNull)
	defer f.Close()
	put := func(name string) error {
		var perr error
		rc, _ := f.SyscallConn()
		rc.Control(func(fd uintptr) { perr = c.Put(name, int(fd)) })
		return perr
	}
	for _, n := range []string{"a", "b"} {
		if err := put(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := put("c"); err == nil {
		t.Fatal("a third name was kept beyond the limit")
	}
	if err := put("a"); err != nil {
		t.Fatalf("replacing a held name: %v", err)
	}
	got, err := c.List()
	if err != nil || len(got) != 2 {
		t.Fatalf("List: %v %v", got, err)
	}
	for _, g := range got {
		g.Close()
	}
}
