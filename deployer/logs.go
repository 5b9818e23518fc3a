package deployer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/deployer/deployer/releases"
)

// Logs writes the last lines of app's worker log to out, or the whole build
// log of release build. With follow it then keeps writing what is appended,
// across rotations, until ctx ends.
func (d *Daemon) Logs(ctx context.Context, app, build string, lines int, follow bool, out io.Writer) error {
	a, err := d.App(app)
	if err != nil {
		return err
	}
	path := filepath.Join(a.dir, "logs", "workers.log")
	if build != "" {
		if _, ok := releases.ParseID(build); !ok {
			build = "v" + build
		}
		path = a.store.BuildLog(build)
		lines = 0
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		if build != "" {
			return fmt.Errorf("no build log for %s", build)
		}
		if !follow {
			return nil
		}
	} else if err != nil {
		return err
	}
	var offset int64
	if f != nil {
		offset, err = writeTail(f, lines, out)
		f.Close()
		if err != nil {
			return err
		}
	}
	if !follow {
		return nil
	}
	return followFile(ctx, path, offset, out)
}

// writeTail writes the last n lines of f (all of it if n <= 0) and returns
// the offset it read to.
func writeTail(f *os.File, n int, out io.Writer) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	start := int64(0)
	if n > 0 {
		// Read backwards in blocks until n newlines are found.
		const block = 64 * 1024
		found := 0
		for pos := size; pos > 0 && found <= n; {
			step := min(int64(block), pos)
			pos -= step
			buf := make([]byte, step)
			if _, err := f.ReadAt(buf, pos); err != nil && err != io.EOF {
				return 0, err
			}
			for i := len(buf) - 1; i >= 0; i-- {
				if buf[i] == '\n' && pos+int64(i) != size-1 {
					if found++; found == n {
						start = pos + int64(i) + 1
						break
					}
				}
			}
			if found == n {
				break
			}
		}
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return 0, err
	}
	if _, err := io.Copy(out, io.LimitReader(f, size-start)); err != nil {
		return 0, err
	}
	return size, nil
}

// followFile writes what is appended to path from offset on, reopening it
// when it is rotated or truncated. The file gives no event, so it is polled.
func followFile(ctx context.Context, path string, offset int64, out io.Writer) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var ino uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		st, err := os.Stat(path)
		if err != nil {
			continue
		}
		if cur := inode(st); ino != 0 && cur != ino || st.Size() < offset {
			offset = 0 // rotated or truncated: the new file from its start
		}
		ino = inode(st)
		if st.Size() == offset {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		buf := &bytes.Buffer{}
		if _, err = f.Seek(offset, io.SeekStart); err == nil {
			var m int64
			m, err = io.Copy(buf, io.LimitReader(f, st.Size()-offset))
			offset += m
		}
		f.Close()
		if _, werr := out.Write(buf.Bytes()); werr != nil {
			return werr
		}
	}
}
