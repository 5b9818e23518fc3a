package releases

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeTree makes a built release tree: files of several modes, nested and
// empty directories, a read-only directory, and symlinks relative, absolute,
// dangling and pointing outside the tree (at outside, a directory with a
// file in it).
func writeTree(t *testing.T, dir, outside string) {
	t.Helper()
	dirs := map[string]os.FileMode{
		"bin": 0o755, "nested": 0o755, "nested/deep": 0o750, "nested/deep/er": 0o700,
		"empty": 0o700, "ro": 0o555,
	}
	for _, d := range []string{"bin", "nested", "nested/deep", "nested/deep/er", "empty", "ro"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	files := []struct {
		name, body string
		mode       os.FileMode
	}{
		{"README", "hello\n", 0o644},
		{"bin/run.sh", "#!/bin/sh\necho hi\n", 0o755},
		{"nested/deep/er/secret", "deep\n", 0o600},
		{"ro/file", "read only\n", 0o444},
		{"empty-file", "", 0o640},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, []byte(f.body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"rel":         "bin/run.sh",
		"bin/up":      "../README",
		"climb":       "../../../../../../.." + outside,
		"abs":         outside,
		"abs-file":    filepath.Join(outside, "outside-file"),
		"dangling":    "nowhere",
		"nested/self": ".",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// Last, so that the read-only directory could take its file first; and
	// made writable again for t.TempDir's cleanup when not run as root.
	for d, mode := range dirs {
		if err := os.Chmod(filepath.Join(dir, d), mode); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dir, "ro"), 0o755) })
}

// listTree describes every entry under dir, without following a symlink.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s -> %s\n", rel, target)
		case fi.Mode().IsRegular():
			body, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s %v %q\n", rel, fi.Mode(), body)
		default:
			fmt.Fprintf(&b, "%s %v\n", rel, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func pack(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Pack(context.Background(), dir, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readHeaders(t *testing.T, data []byte) []*tar.Header {
	t.Helper()
	var hs []*tar.Header
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return hs
		}
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
}

func TestPackUnpackRoundTrip(t *testing.T) {
	src, outside := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "outside-file"), []byte("not in the release\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeTree(t, src, outside)
	data := pack(t, src)

	dst := t.TempDir()
	if err := Unpack(context.Background(), bytes.NewReader(data), dst, 1<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dst, "ro"), 0o755) })
	want, got := listTree(t, src), listTree(t, dst)
	if got != want {
		t.Fatalf("unpacked tree:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(got, "abs -> "+outside+"\n") || !strings.Contains(got, "ro/file -r--r--r--") {
		t.Fatalf("the listing misses what it should compare:\n%s", got)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Fatalf("outside the tree: %v", entries)
	}
	if again := pack(t, dst); !bytes.Equal(again, data) {
		t.Fatal("the unpacked tree packs to other bytes")
	}
}

// TestPackIsDeterministic: mtimes, which differ from host to host, and the
// packing user do not reach the stream.
func TestPackIsDeterministic(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, t.TempDir())
	first := pack(t, src)
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(src, "README"), later, later); err != nil {
		t.Fatal(err)
	}
	if second := pack(t, src); !bytes.Equal(first, second) {
		t.Fatal("two packs of one tree differ")
	}
	var names []string
	for _, h := range readHeaders(t, first) {
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Fatalf("%s: uid %d gid %d %q %q mtime %v", h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime)
		}
		names = append(names, h.Name)
	}
	want := "README abs abs-file bin/ bin/run.sh bin/up climb dangling empty/ empty-file nested/ nested/deep/ nested/deep/er/ nested/deep/er/secret nested/self rel ro/ ro/file"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("entries:\n%s\nwant:\n%s", got, want)
	}
}

// TestPackKeepsASymlinkToAnOutsideDirectoryAsALink: the directory it points
// at is not packed.
func TestPackKeepsASymlinkToAnOutsideDirectoryAsALink(t *testing.T) {
	src, outside := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "private"), []byte("private key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(src, "out")); err != nil {
		t.Fatal(err)
	}
	data := pack(t, src)
	hs := readHeaders(t, data)
	if len(hs) != 1 || hs[0].Name != "out" || hs[0].Typeflag != tar.TypeSymlink || hs[0].Linkname != outside {
		t.Fatalf("headers: %+v", hs)
	}
	if bytes.Contains(data, []byte("private")) {
		t.Fatal("packed what the link points at")
	}
}

func TestPackSkipsFifos(t *testing.T) {
	src := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	hs := readHeaders(t, pack(t, src))
	if len(hs) != 1 || hs[0].Name != "file" {
		t.Fatalf("headers: %+v", hs)
	}
}

func TestPackStopsWhenItsContextEnds(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Pack(ctx, src, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// entry is one entry of a crafted stream.
type entry struct {
	h    tar.Header
	body string
}

func file(name, body string) entry {
	return entry{tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, body}
}

func dirEntry(name string) entry {
	return entry{h: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

func link(name, target string) entry {
	return entry{h: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// tarOf writes entries as tar.Writer does, which checks none of them.
func tarOf(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(&e.h); err != nil {
			t.Fatalf("%s: %v", e.h.Name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// emptyDir is an empty release directory in a directory of its own, so
// that a write next to it can be seen.
func emptyDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "v1")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestUnpackRefusesHostileStreams crafts streams that try to escape the
// directory, to write through a symlink, or to make what a release has no
// use for. Each fails with ErrUnsafePath and writes nothing outside.
func TestUnpackRefusesHostileStreams(t *testing.T) {
	outside := t.TempDir()
	cases := map[string][]entry{
		"dot-dot":                      {file("../x", "pwned")},
		"dot-dot directory":            {dirEntry("../")},
		"absolute":                     {file("/etc/x", "pwned")},
		"dot-dot inside":               {file("a/../../x", "pwned")},
		"dot-dot inside that resolves": {file("a/../x", "pwned")},
		".git":                         {file(".git/config", "pwned")},
		".GIT below":                   {file("a/.GIT/x", "pwned")},
		"dot component":                {file("./x", "pwned")},
		"empty component":              {file("a//x", "pwned")},
		"empty name":                   {file("", "pwned")},
		"absolute symlink then file beneath": {
			link("l", outside), file("l/x", "pwned")},
		"absolute symlink then directory beneath": {
			link("l", outside), dirEntry("l/d/")},
		"symlink climbing out then file beneath": {
			link("l", "../../../../../../../.."+outside), file("l/x", "pwned")},
		"symlink inside then file beneath": {
			dirEntry("sub/"), link("l", "sub"), file("l/x", "pwned")},
		"symlink inside then file deep beneath": {
			dirEntry("sub/"), link("l", "sub"), file("l/a/b", "pwned")},
		"file then file beneath": {file("f", "x"), file("f/x", "pwned")},
		"hard link":              {file("a", "x"), {h: tar.Header{Typeflag: tar.TypeLink, Name: "b", Linkname: "a"}}},
		"hard link outside": {
			{h: tar.Header{Typeflag: tar.TypeLink, Name: "b", Linkname: filepath.Join(outside, "target")}}},
		"char device":           {{h: tar.Header{Typeflag: tar.TypeChar, Name: "null", Mode: 0o666, Devmajor: 1, Devminor: 3}}},
		"block device":          {{h: tar.Header{Typeflag: tar.TypeBlock, Name: "sda", Mode: 0o660, Devmajor: 8}}},
		"fifo":                  {{h: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o644}}},
		"file twice":            {file("a", "x"), file("a", "pwned")},
		"directory twice":       {dirEntry("d/"), dirEntry("d/")},
		"file then directory":   {file("a", "x"), dirEntry("a/")},
		"symlink then file":     {link("l", outside), file("l", "pwned")},
		"made parent then file": {file("d/x", "x"), file("d", "pwned")},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			data := tarOf(t, entries...)
			dir := emptyDir(t)
			err := Unpack(context.Background(), bytes.NewReader(data), dir, 1<<20)
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("err = %v, want ErrUnsafePath", err)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Fatalf("wrote outside: %v", entries)
			}
			if entries, _ := os.ReadDir(filepath.Dir(dir)); len(entries) != 1 {
				t.Fatalf("wrote next to the release: %v", entries)
			}
			if got := listTree(t, dir); strings.Contains(got, "pwned") {
				t.Fatalf("wrote the payload:\n%s", got)
			}
		})
	}
}

// TestUnpackMakesParentsAndKeepsOnlyPermissionBits: a parent the stream
// does not list is made 0o755, a later listing of it sets its mode, and
// setuid, setgid and sticky are dropped; the umask trims nothing.
func TestUnpackMakesParentsAndKeepsOnlyPermissionBits(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	suid := file("suid", "#!/bin/sh\n")
	suid.h.Mode = 0o4755
	open := file("open", "")
	open.h.Mode = 0o666
	sgid := dirEntry("sgid/")
	sgid.h.Mode = 0o3775
	later := dirEntry("later/")
	later.h.Mode = 0o750
	data := tarOf(t, suid, open, sgid, file("a/b/c", "deep"), file("later/x", "x"), later)
	dir := emptyDir(t)
	if err := Unpack(context.Background(), bytes.NewReader(data), dir, 0); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{
		"suid": 0o755, "open": 0o666, "sgid": fs.ModeDir | 0o775,
		"a": fs.ModeDir | 0o755, "a/b": fs.ModeDir | 0o755, "a/b/c": 0o644, "later": fs.ModeDir | 0o750,
	}
	for name, mode := range want {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v, %v; want %v", name, fi.Mode(), err, mode)
		}
	}
}

// TestUnpackBoundsTheContent: many small files adding up past the limit,
// and one file past it, fail; a tree of exactly the limit passes.
func TestUnpackBoundsTheContent(t *testing.T) {
	body := strings.Repeat("x", 100)
	var many []entry
	for i := range 11 {
		many = append(many, file(fmt.Sprintf("f%02d", i), body))
	}
	cases := map[string][]entry{
		"many files": many,
		"one file":   {file("big", strings.Repeat("y", 1001))},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			dir := emptyDir(t)
			err := Unpack(context.Background(), bytes.NewReader(tarOf(t, entries...)), dir, 1000)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			if got := dirSize(t, dir); got > 1000 {
				t.Fatalf("wrote %d bytes", got)
			}
		})
	}
	if err := Unpack(context.Background(), bytes.NewReader(tarOf(t, many[:10]...)), emptyDir(t), 1000); err != nil {
		t.Fatalf("a tree of exactly the limit: %v", err)
	}
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			fi, _ := d.Info()
			n += fi.Size()
		}
		return nil
	})
	return n
}

// TestUnpackCountsTheBytesCopied: tar.Reader yields what a header says, but
// the limit holds on the bytes copied even for content that outgrows its
// header.
func TestUnpackCountsTheBytesCopied(t *testing.T) {
	root, err := os.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	u := &unpacker{ctx: context.Background(), root: root, limit: 1000, maxEntries: 10,
		kinds: map[string]kind{}, dirModes: map[string]fs.FileMode{}}
	err = u.file("f", 0o644, 10, strings.NewReader(strings.Repeat("z", 5000)))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if fi, err := root.Stat("f"); err != nil || fi.Size() > 1001 {
		t.Fatalf("wrote %v, %v", fi.Size(), err)
	}
}

func TestUnpackBoundsTheEntries(t *testing.T) {
	three := tarOf(t, file("a", ""), dirEntry("b/"), link("c", "a"))
	if err := unpack(context.Background(), bytes.NewReader(three), emptyDir(t), 0, 3); err != nil {
		t.Fatalf("three entries: %v", err)
	}
	cases := map[string][]byte{
		"four entries": tarOf(t, file("a", ""), dirEntry("b/"), link("c", "a"), file("d", "")),
		// a/b/c makes a and a/b: three entries in the tree.
		"made parents": tarOf(t, file("a/b/c", "")),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			err := unpack(context.Background(), bytes.NewReader(data), emptyDir(t), 0, 2+strings.Count(name, "four"))
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
		})
	}
}

func TestUnpackRefusesAVeryLongName(t *testing.T) {
	data := tarOf(t, file(strings.Repeat("a/", maxNameLen/2)+"x", ""))
	if err := Unpack(context.Background(), bytes.NewReader(data), emptyDir(t), 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}

func TestUnpackWantsAnEmptyDirectory(t *testing.T) {
	dir := emptyDir(t)
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	data := tarOf(t, file("b", "x"))
	if err := Unpack(context.Background(), bytes.NewReader(data), dir, 0); err == nil {
		t.Fatal("unpacked into a directory that is not empty")
	}
	if _, err := os.Lstat(filepath.Join(dir, "b")); err == nil {
		t.Fatal("wrote into a directory that is not empty")
	}
	if err := Unpack(context.Background(), bytes.NewReader(data), filepath.Join(dir, "missing"), 0); err == nil {
		t.Fatal("unpacked into a missing directory")
	}
}

// cancelAfter cancels its context once n bytes were read through it.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p[:min(len(p), 512)])
	if c.n -= n; c.n <= 0 {
		c.cancel()
	}
	return n, err
}

func TestUnpackStopsWhenItsContextEnds(t *testing.T) {
	data := tarOf(t, file("a", "a"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Unpack(ctx, bytes.NewReader(data), emptyDir(t), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}

	// Mid-file: the copy stops, not only the loop over the entries.
	data = tarOf(t, file("big", strings.Repeat("b", 1<<20)))
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	r := &cancelAfter{r: bytes.NewReader(data), n: 4096, cancel: cancel}
	dir := emptyDir(t)
	if err := Unpack(ctx, r, dir, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if got := dirSize(t, dir); got >= 1<<20 {
		t.Fatalf("wrote the whole file: %d bytes", got)
	}
}
