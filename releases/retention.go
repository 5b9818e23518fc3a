package releases

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// Plan is what a cleanup keeps and what it removes, with a reason for each.
type Plan struct {
	Keep  []*Release        // newest first
	Prune []*Release        // newest first
	Why   map[string]string // release id -> reason it is kept or pruned
}

// good reports whether a release went live at some point and is still on disk.
func good(r *Release) bool {
	return r.Status == Live || r.Status == Retired || r.Status == RolledBack
}

// PreviousGood is the rollback target: the newest release older than live
// that was retired after being live. Releases rolled back from are not
// candidates (they were rolled back for a reason), failed ones never went
// live. It returns nil if there is none.
func PreviousGood(list []*Release, live string) *Release {
	liveN, ok := ParseID(live)
	if !ok {
		return nil
	}
	var best *Release
	for _, r := range list {
		if r.Status == Retired && r.Number < liveN && (best == nil || r.Number > best.Number) {
			best = r
		}
	}
	return best
}

// PlanCleanup applies the retention rules (SPEC §7) to list: keep the newest
// keep good releases, and always the live one, the previous good one (the
// rollback target), and any in busy (running or draining workers). Failed
// releases do not count toward keep; the newest failed one is kept for
// inspection. Releases still building and ones already pruned are left alone.
func PlanCleanup(list []*Release, live string, keep int, busy map[string]bool) Plan {
	sorted := append([]*Release(nil), list...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Number > sorted[j].Number })
	p := Plan{Why: map[string]string{}}
	prev := PreviousGood(sorted, live)
	goodSeen, newestFailed := 0, true
	for _, r := range sorted {
		why, keepIt := "", false
		switch {
		case r.Status == Pruned:
			continue
		case r.Status == Building:
			why, keepIt = "still building", true
		case r.ID == live:
			why, keepIt = "live", true
		case prev != nil && r.ID == prev.ID:
			why, keepIt = "previous good release (rollback target)", true
		case busy[r.ID]:
			why, keepIt = "has running or draining workers", true
		case r.Status == Failed && newestFailed:
			why, keepIt = "newest failed release, kept for inspection", true
		case r.Status == Failed:
			why = "failed"
		case good(r) && goodSeen < keep:
			why, keepIt = fmt.Sprintf("among the newest %d good releases", keep), true
		default:
			why = fmt.Sprintf("older than the newest %d good releases", keep)
		}
		if good(r) {
			goodSeen++
		}
		if r.Status == Failed {
			newestFailed = false
		}
		p.Why[r.ID] = why
		if keepIt {
			p.Keep = append(p.Keep, r)
		} else {
			p.Prune = append(p.Prune, r)
		}
	}
	return p
}

// Prune removes release id's tree and build log, keeps its metadata marked
// pruned, and returns the bytes freed.
func (s *Store) Prune(r *Release) (int64, error) {
	var freed int64
	for _, p := range []string{s.Dir(r.ID), s.BuildLog(r.ID)} {
		_ = filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if info, err := d.Info(); err == nil {
					freed += info.Size()
				}
			}
			return nil
		})
		if err := os.RemoveAll(p); err != nil {
			return freed, fmt.Errorf("prune %s: %w", r.ID, err)
		}
	}
	r.Status = Pruned
	return freed, s.Save(r)
}

// RemoveTree removes the checked-out tree of release id, keeping its
// metadata and build log: what a failed release leaves.
func (s *Store) RemoveTree(id string) error {
	if _, ok := ParseID(id); !ok {
		return fmt.Errorf("remove %q: %w", id, ErrNotFound)
	}
	if err := os.RemoveAll(s.Dir(id)); err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	return nil
}
