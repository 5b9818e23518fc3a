package releases

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// packTime is the mtime of every packed entry: a build's mtimes differ from
// host to host, and the same tree must pack to the same bytes.
var packTime = time.Unix(0, 0)

// maxNameLen bounds an entry's name as Linux bounds a path (PATH_MAX). Each
// component of a name costs a step of every os.Root call on it and may cost
// a directory, so a name of a million components would cost without bound.
const maxNameLen = 4096

// Pack writes the tree under dir as an uncompressed tar stream to w:
// directories, regular files (content and permission bits) and symlinks
// (their target as it is). Entries come parents first, each directory's
// names sorted, with no owner, uid/gid 0 and a fixed mtime, so that the same
// tree always packs to the same bytes. It reads through an os.Root of dir
// and never follows a symlink. Sockets, fifos and devices, which a build can
// leave, are skipped; any other kind of file fails. It stops when ctx ends.
func Pack(ctx context.Context, dir string, w io.Writer) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	defer root.Close()
	p := &packer{ctx: ctx, root: root, tw: tar.NewWriter(w)}
	fi, err := root.Lstat(".")
	if err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	if err := p.dir(".", fi); err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	if err := p.tw.Close(); err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	return nil
}

type packer struct {
	ctx  context.Context
	root *os.Root
	tw   *tar.Writer
}

// dir packs what the directory name holds, sorted by name.
func (p *packer) dir(name string, fi fs.FileInfo) error {
	f, _, err := p.open(name, fi)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("list %s: %w", name, err)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := p.entry(path.Join(name, n)); err != nil {
			return err
		}
	}
	return nil
}

func (p *packer) entry(name string) error {
	if err := p.ctx.Err(); err != nil {
		return err
	}
	fi, err := p.root.Lstat(name)
	if err != nil {
		return err
	}
	mode := fi.Mode()
	switch {
	case mode.IsDir():
		if err := p.header(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: int64(mode.Perm())}); err != nil {
			return err
		}
		return p.dir(name, fi)
	case mode.IsRegular():
		return p.file(name, fi)
	case mode&fs.ModeSymlink != 0:
		target, err := p.root.Readlink(name)
		if err != nil {
			return err
		}
		return p.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
	case mode&(fs.ModeSocket|fs.ModeNamedPipe|fs.ModeDevice|fs.ModeCharDevice) != 0:
		// A build or a test run can leave a socket or a fifo behind; it is
		// no part of the release, and Unpack would refuse it.
		return nil
	default:
		return fmt.Errorf("%s: cannot pack a file of mode %v", name, mode)
	}
}

func (p *packer) file(name string, fi fs.FileInfo) error {
	f, fi, err := p.open(name, fi)
	if err != nil {
		return err
	}
	defer f.Close()
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(fi.Mode().Perm()), Size: fi.Size()}
	if err := p.header(h); err != nil {
		return err
	}
	if _, err := io.CopyN(p.tw, ctxReader{p.ctx, f}, h.Size); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	return nil
}

// open opens name, which Lstat found as fi, and returns what it opened. A
// Root follows a symlink inside the tree, so should name have been replaced
// by one since, the file opened is not the one listed and it fails.
func (p *packer) open(name string, fi fs.FileInfo) (*os.File, fs.FileInfo, error) {
	f, err := p.root.Open(name)
	if err != nil {
		return nil, nil, err
	}
	got, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !os.SameFile(fi, got) {
		f.Close()
		return nil, nil, fmt.Errorf("%s changed while it was packed", name)
	}
	return f, got, nil
}

// header writes h with the owner and time every entry has.
func (p *packer) header(h *tar.Header) error {
	h.ModTime = packTime
	if err := p.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("write %s: %w", h.Name, err)
	}
	return nil
}

// Unpack writes the tar stream r into dir, which must exist and be empty. It
// is confined as Checkout is: every write goes through an os.Root of dir; a
// name that is absolute, not clean, or holds "..", a ".git" component (in
// any case) or NUL fails with ErrUnsafePath, and so does an entry under a
// symlink or a file an earlier entry made, so that no symlink, even one
// pointing inside dir, redirects a later write. Only directories, regular
// files and symlinks are accepted; anything else fails with ErrUnsafePath,
// as does a name that appears twice. Permission bits are kept but setuid,
// setgid and sticky are dropped.
//
// Its cost is bounded: more than limit bytes of file content (limit > 0) or
// more than MaxEntries entries fails with ErrTooLarge, counted while
// streaming from the bytes actually written. Parent directories the stream
// does not list are made (0o755) and count as entries. It stops when ctx
// ends. On an error dir holds part of the tree: the caller removes it.
func Unpack(ctx context.Context, r io.Reader, dir string, limit int64) error {
	return unpack(ctx, r, dir, limit, MaxEntries)
}

// unpack is Unpack with the bound on entries as a parameter, for the tests.
func unpack(ctx context.Context, r io.Reader, dir string, limit int64, maxEntries int) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer root.Close()
	if err := checkEmpty(root); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	u := &unpacker{ctx: ctx, root: root, limit: limit, maxEntries: maxEntries,
		kinds: map[string]kind{}, dirModes: map[string]fs.FileMode{}}
	if err := u.all(tar.NewReader(ctxReader{ctx, r})); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	if err := u.chmodDirs(); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	return nil
}

func checkEmpty(root *os.Root) error {
	f, err := root.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) > 0 {
		return fmt.Errorf("%s is not empty", root.Name())
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// kind is what an unpacked name is. As dir was empty and nothing is ever
// removed, kinds lists everything in dir, so an entry's parent is checked
// by a look-up rather than by asking the file system.
type kind int

const (
	kindNone    kind = iota
	kindMadeDir      // a parent the stream had not listed (yet)
	kindListedDir
	kindFile
	kindSymlink
)

type unpacker struct {
	ctx        context.Context
	root       *os.Root
	limit      int64
	maxEntries int
	written    int64
	kinds      map[string]kind
	dirModes   map[string]fs.FileMode
}

func (u *unpacker) all(tr *tar.Reader) error {
	for {
		if err := u.ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if errors.Is(err, tar.ErrInsecurePath) { // with GODEBUG=tarinsecurepath=0
			return fmt.Errorf("%w: %q", ErrUnsafePath, h.Name)
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if err := u.entry(h, tr); err != nil {
			return err
		}
	}
}

func (u *unpacker) entry(h *tar.Header, content io.Reader) error {
	name, err := entryName(h)
	if err != nil {
		return err
	}
	switch h.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink:
	default:
		// Hard links could alias a file outside the release, devices and
		// fifos have no place in one.
		return fmt.Errorf("%w: %s: entry of type %q", ErrUnsafePath, name, h.Typeflag)
	}
	if k := u.kinds[name]; k != kindNone && (k != kindMadeDir || h.Typeflag != tar.TypeDir) {
		return fmt.Errorf("%w: %s appears twice", ErrUnsafePath, name)
	}
	if err := u.parent(name); err != nil {
		return err
	}
	mode := fs.FileMode(h.Mode & 0o777)
	switch h.Typeflag {
	case tar.TypeDir:
		return u.dir(name, mode)
	case tar.TypeReg:
		return u.file(name, mode, h.Size, content)
	default:
		return u.symlink(name, h.Linkname)
	}
}

// entryName is h's name, refused unless it is a clean relative path of
// plain components.
func entryName(h *tar.Header) (string, error) {
	name := h.Name
	if h.Typeflag == tar.TypeDir {
		name = strings.TrimSuffix(name, "/") // as tar writes a directory
	}
	if len(name) > maxNameLen {
		return "", fmt.Errorf("%w: a name of %d bytes", ErrTooLarge, len(name))
	}
	// An empty, "." or ".." component refuses an absolute or unclean name.
	for c := range strings.SplitSeq(name, "/") {
		if err := checkPath(c, name); err != nil {
			return "", err
		}
	}
	return name, nil
}

// parent makes sure that the directory holding name is a directory this
// stream made, making it if needed, so that no symlink or file of the
// stream lies on the way to name.
func (u *unpacker) parent(name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	switch u.kinds[dir] {
	case kindMadeDir, kindListedDir:
		return nil
	case kindSymlink:
		return fmt.Errorf("%w: %s is under the symlink %s", ErrUnsafePath, name, dir)
	case kindFile:
		return fmt.Errorf("%w: %s is under the file %s", ErrUnsafePath, name, dir)
	}
	if err := u.parent(dir); err != nil {
		return err
	}
	return u.mkdir(dir, kindMadeDir, 0o755)
}

func (u *unpacker) dir(name string, mode fs.FileMode) error {
	if u.kinds[name] == kindMadeDir {
		u.kinds[name] = kindListedDir
		u.dirModes[name] = mode
		return nil
	}
	return u.mkdir(name, kindListedDir, mode)
}

// mkdir makes a directory only its owner can enter; it gets its mode at the
// end (see chmodDirs).
func (u *unpacker) mkdir(name string, k kind, mode fs.FileMode) error {
	if err := u.add(name, k); err != nil {
		return err
	}
	if err := u.root.Mkdir(name, 0o700); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnsafePath, name, err)
	}
	u.dirModes[name] = mode
	return nil
}

func (u *unpacker) file(name string, mode fs.FileMode, size int64, r io.Reader) error {
	if u.limit > 0 && size > u.limit-u.written {
		return u.tooLarge(name)
	}
	if err := u.add(name, kindFile); err != nil {
		return err
	}
	f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnsafePath, name, err)
	}
	if err := u.copy(f, name, r); err != nil {
		f.Close()
		return err
	}
	// Chmod rather than OpenFile's perm, which the umask would trim.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// copy copies r to f and counts the bytes copied against the limit, so that
// an entry that outgrows its header cannot pass the limit either.
func (u *unpacker) copy(f *os.File, name string, r io.Reader) error {
	if u.limit <= 0 {
		if _, err := io.Copy(f, r); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return nil
	}
	left := u.limit - u.written
	// One byte past what is left tells a stream over the limit from one
	// that fits exactly.
	n, err := io.Copy(f, io.LimitReader(r, left+1))
	u.written += n
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if n > left {
		return u.tooLarge(name)
	}
	return nil
}

func (u *unpacker) tooLarge(name string) error {
	return fmt.Errorf("%w: more than %s at %s", ErrTooLarge, humanize.IBytes(uint64(u.limit)), name)
}

func (u *unpacker) symlink(name, target string) error {
	if err := u.add(name, kindSymlink); err != nil {
		return err
	}
	if err := u.root.Symlink(target, name); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnsafePath, name, err)
	}
	return nil
}

// add records name before it is made and counts it against maxEntries.
func (u *unpacker) add(name string, k kind) error {
	if len(u.kinds) >= u.maxEntries {
		return fmt.Errorf("%w: more than %d entries", ErrTooLarge, u.maxEntries)
	}
	u.kinds[name] = k
	return nil
}

// chmodDirs gives the directories their modes last and deepest first, so
// that a read-only directory could still take its content and one without
// search permission does not stop the chmod of those below it.
func (u *unpacker) chmodDirs() error {
	names := slices.Sorted(maps.Keys(u.dirModes))
	slices.Reverse(names)
	for _, name := range names {
		if err := u.root.Chmod(name, u.dirModes[name]); err != nil {
			return err
		}
	}
	return nil
}
