package admin

import (
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// duEvery is how long a disk use is reused: walking release trees of
// node_modules or vendored code costs far more than a scrape should, and
// the number changes only with a deploy or a cleanup.
const duEvery = time.Minute

// diskUsage caches the disk use of each app's release trees.
type diskUsage struct {
	ttl  time.Duration
	now  func() time.Time
	walk func(dir string) (int64, error)

	mu   sync.Mutex
	apps map[string]*usage
}

// usage is one app's last walk; its mutex makes concurrent scrapes wait
// for one walk rather than each start its own.
type usage struct {
	changes atomic.Int64 // changes of the app's releases, counted without waiting for a walk

	mu    sync.Mutex
	dir   string
	at    time.Time
	seen  int64 // changes when the last walk began
	bytes int64
}

func newDiskUsage() *diskUsage {
	return &diskUsage{ttl: duEvery, now: time.Now, walk: du, apps: map[string]*usage{}}
}

// of is the disk use of dir, app's release trees, walked at most once per ttl.
func (d *diskUsage) of(app, dir string) (int64, error) {
	u := d.usage(app)
	u.mu.Lock()
	defer u.mu.Unlock()
	changes := u.changes.Load()
	if u.dir == dir && !u.at.IsZero() && d.now().Sub(u.at) < d.ttl && u.seen == changes {
		return u.bytes, nil
	}
	n, err := d.walk(dir)
	if err != nil {
		return 0, err
	}
	u.dir, u.at, u.seen, u.bytes = dir, d.now(), changes, n
	return n, nil
}

func (d *diskUsage) usage(app string) *usage {
	d.mu.Lock()
	defer d.mu.Unlock()
	u := d.apps[app]
	if u == nil {
		u = &usage{}
		d.apps[app] = u
	}
	return u
}

// changed says app's releases changed: the next scrape walks them again,
// and so does the one after a walk that was under way. It never waits for
// a walk.
func (d *diskUsage) changed(app string) { d.usage(app).changes.Add(1) }

// du is the disk space the files under dir take, as du(1) counts it:
// allocated blocks, each hard-linked file once. What cannot be read (a
// tree an app's user made unreadable, a release removed during the walk)
// is left out; only an unreadable dir itself is an error.
func du(dir string) (int64, error) {
	if _, err := os.Lstat(dir); err != nil {
		return 0, err
	}
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var total int64
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			return nil // unreadable or gone: skip it (and, for a directory, what is under it)
		}
		fi, err := e.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			total += fi.Size()
			return nil
		}
		if st.Nlink > 1 && !fi.IsDir() {
			id := inode{uint64(st.Dev), st.Ino}
			if seen[id] {
				return nil
			}
			seen[id] = true
		}
		total += st.Blocks * 512
		return nil
	})
	return total, err
}
