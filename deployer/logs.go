package deployer

import (
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

// followFile writes what is appended to path from offset on. When the file
// is rotated (renamed away and created anew) it reads the old one to its end
// before it moves to the new one from its start; when it is truncated it
// starts over. A file gives no event for either, so it is polled.
func followFile(ctx context.Context, path string, offset int64, out io.Writer) error {
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	open := func() {
		if nf, err := os.Open(path); err == nil {
			f = nf
		}
	}
	open()
	if f != nil {
		if st, err := f.Stat(); err != nil || st.Size() < offset {
			offset = 0 // replaced between the tail and now
		}
		f.Seek(offset, io.SeekStart)
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if f != nil {
			if _, err := io.Copy(out, f); err != nil {
				return err
			}
			cur, errCur := f.Stat()
			st, errPath := os.Stat(path)
			switch {
			case errPath == nil && errCur == nil && !os.SameFile(cur, st):
				if _, err := io.Copy(out, f); err != nil { // the rest of the old file
					return err
				}
				f.Close()
				f = nil
				open()
				continue
			case errCur == nil:
				if pos, _ := f.Seek(0, io.SeekCurrent); cur.Size() < pos {
					f.Seek(0, io.SeekStart) // truncated
				}
			}
		} else {
			open()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
