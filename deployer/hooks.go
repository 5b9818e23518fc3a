package deployer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// hook runs a lifecycle hook (README, "Lifecycle hooks and shared paths")
// with sh -c in the release dir, its output streamed to the pusher and the
// build log, bounded by build_timeout like the build. An empty command is
// skipped.
func (j *job) hook(ctx context.Context, name, command, dir string, env []string) error {
	if command == "" {
		return nil
	}
	t := time.Now()
	j.pr.Step("Running %s hook: %s", name, command)
	if err := j.shell(ctx, name, dir, command, env); err != nil {
		return fmt.Errorf("%s hook: %w", name, err)
	}
	j.pr.Step("%s hook done (%s)", name, secs(time.Since(t)))
	return nil
}

// linkShared replaces each shared path in the release with a symlink to its
// persistent copy under apps/APP/shared, creating that copy if missing: a
// directory for a path ending in "/", else an empty file. Everything happens
// through an os.Root of the release, so a symlink in the repository cannot
// redirect it outside.
func (j *job) linkShared(dir string) error {
	if len(j.cfg.Shared) == 0 {
		return nil
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, p := range j.cfg.Shared {
		isDir := strings.HasSuffix(p, "/")
		rel := filepath.Clean(strings.TrimSuffix(p, "/"))
		src := filepath.Join(j.dir, "shared", rel)
		if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
			if err := j.mkShared(rel, isDir); err != nil {
				return fmt.Errorf("shared %s: %w", p, err)
			}
			j.pr.Info("created shared/%s (empty)", p)
		}
		if err := root.RemoveAll(rel); err != nil {
			return fmt.Errorf("shared %s: %w", p, err)
		}
		if d := filepath.Dir(rel); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("shared %s: %w", p, err)
			}
		}
		if err := root.Symlink(src, rel); err != nil {
			return fmt.Errorf("shared %s: %w", p, err)
		}
	}
	j.pr.Step("Linked shared paths: %s", strings.Join(j.cfg.Shared, " "))
	return nil
}
