package deployer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/deployer/deployer/releases"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// maxTree bounds one tree object read into memory: a million entries
// (releases.MaxEntries) with names of ordinary length.
const maxTree = 64 << 20

// catFile reads a checkout's objects with git's own cat-file: sizes with
// --batch-check, contents with --batch. git resolves deltas however they
// were packed (go-git holds a delta's whole base, and its whole delta data,
// in memory), and the daemon reads each blob as a stream from git's pipe:
// what a pushed object costs in memory is git's, in a process that ends
// with the checkout, never the daemon's.
type catFile struct {
	check, batch *catProc
}

// catProc is one git cat-file process and where its protocol stands.
type catProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func openCatFile(ctx context.Context, repo string) (*catFile, error) {
	check, err := startCat(ctx, repo, "--batch-check")
	if err != nil {
		return nil, err
	}
	batch, err := startCat(ctx, repo, "--batch")
	if err != nil {
		check.close()
		return nil, err
	}
	return &catFile{check: check, batch: batch}, nil
}

func startCat(ctx context.Context, repo, mode string) (*catProc, error) {
	cmd := exec.CommandContext(ctx, "git", "--git-dir="+repo, "cat-file", mode)
	cmd.Env = CommandEnv("GIT_")
	cmd.WaitDelay = time.Second
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("git cat-file: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("git cat-file: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("git cat-file: %w", err)
	}
	return &catProc{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 64<<10)}, nil
}

// close ends git at once: it only reads, and one left mid-object would
// block on its pipe with nobody reading.
func (p *catProc) close() {
	p.in.Close()
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

// Close ends both git processes.
func (c *catFile) Close() {
	c.check.close()
	c.batch.close()
}

// header asks for h and reads git's answer: "<oid> <type> <size>", or
// "<oid> missing".
func (p *catProc) header(h plumbing.Hash) (typ string, size int64, err error) {
	if _, err := io.WriteString(p.in, h.String()+"\n"); err != nil {
		return "", 0, fmt.Errorf("git cat-file: %w", err)
	}
	line, err := p.out.ReadString('\n')
	if err != nil {
		return "", 0, fmt.Errorf("git cat-file: %w", err)
	}
	f := strings.Fields(line)
	if len(f) == 2 && f[1] == "missing" {
		return "", 0, fmt.Errorf("object %s: %w", h, plumbing.ErrObjectNotFound)
	}
	if len(f) != 3 || f[0] != h.String() {
		return "", 0, fmt.Errorf("git cat-file: unexpected answer %q", line)
	}
	size, err = strconv.ParseInt(f[2], 10, 64)
	if err != nil || size < 0 {
		return "", 0, fmt.Errorf("git cat-file: unexpected answer %q", line)
	}
	return f[1], size, nil
}

// info is the type and size of h, without its content.
func (c *catFile) info(h plumbing.Hash, want string) (int64, error) {
	typ, size, err := c.check.header(h)
	if err != nil {
		return 0, err
	}
	if typ != want {
		return 0, fmt.Errorf("object %s is a %s, not a %s", h, typ, want)
	}
	return size, nil
}

// Tree reads tree h, refusing one larger than maxTree.
func (c *catFile) Tree(h plumbing.Hash) (*object.Tree, error) {
	size, err := c.info(h, "tree")
	if err != nil {
		return nil, err
	}
	if size > maxTree {
		return nil, fmt.Errorf("%w: tree %s is %d bytes", releases.ErrTooLarge, h, size)
	}
	r, err := c.open(h, size)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	o := &plumbing.MemoryObject{}
	o.SetType(plumbing.TreeObject)
	w, _ := o.Writer()
	if _, err := io.Copy(w, r); err != nil {
		return nil, fmt.Errorf("read tree %s: %w", h, err)
	}
	t := &object.Tree{}
	if err := t.Decode(o); err != nil {
		return nil, fmt.Errorf("read tree %s: %w", h, err)
	}
	return t, nil
}

// Size is the size of blob h.
func (c *catFile) Size(h plumbing.Hash) (int64, error) { return c.info(h, "blob") }

// Blob streams blob h from git's pipe.
func (c *catFile) Blob(h plumbing.Hash) (io.ReadCloser, error) {
	size, err := c.info(h, "blob")
	if err != nil {
		return nil, err
	}
	return c.open(h, size)
}

// open asks --batch for h, whose size --batch-check gave, and returns its
// content; Close skips what was not read, and the newline after it.
func (c *catFile) open(h plumbing.Hash, size int64) (io.ReadCloser, error) {
	_, got, err := c.batch.header(h)
	if err != nil {
		return nil, err
	}
	if got != size {
		return nil, fmt.Errorf("git cat-file: %s is %d bytes, then %d", h, size, got)
	}
	return &catReader{out: c.batch.out, left: size}, nil
}

// catReader is one object's content on git's pipe.
type catReader struct {
	out  *bufio.Reader
	left int64
}

func (c *catReader) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.out.Read(p)
	c.left -= int64(n)
	if err == io.EOF && c.left > 0 {
		err = io.ErrUnexpectedEOF // git went away mid-object
	}
	return n, err
}

func (c *catReader) Close() error {
	if _, err := io.Copy(io.Discard, c); err != nil {
		return fmt.Errorf("git cat-file: %w", err)
	}
	if b, err := c.out.ReadByte(); err != nil || b != '\n' {
		return errors.New("git cat-file: object not followed by a newline")
	}
	return nil
}
