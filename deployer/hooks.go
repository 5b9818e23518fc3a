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

// hook runs a lifecycle hook (SPEC §3 hooks.*) with sh -c in the release
// dir, its output streamed to the pusher and the build log, bounded by
// build_timeout like the build. An empty command is skipped.
func (a *App) hook(ctx context.Context, pr *progress, name, command, dir string, env []string) error {
	if command == "" {
		return nil
	}
	t := time.Now()
	pr.Step("Running %s hook: %s", name, command)
	if err := runShell(ctx, dir, command, env, pr.indented(), a.cfg().BuildTimeout); err != nil {
		return fmt.Errorf("%s hook: %w", name, err)
	}
	pr.Step("%s hook done (%s)", name, secs(time.Since(t)))
	return nil
}

// linkShared replaces each shared path in the release with a symlink to its
// persistent copy under apps/APP/shared, creating that copy if missing: a
// directory for a path ending in "/", else an empty file. Everything happens
// through an os.Root of the release, so a symlink in the repository cannot
// redirect it outside.
func (a *App) linkShared(pr *progress, dir string) error {
	if len(a.cfg().Shared) == 0 {
		return nil
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, p := range a.cfg().Shared {
		isDir := strings.HasSuffix(p, "/")
		rel := filepath.Clean(strings.TrimSuffix(p, "/"))
		src := filepath.Join(a.dir, "shared", rel)
		if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
				return err
			}
			if isDir {
				err = os.Mkdir(src, 0o755)
			} else {
				err = os.WriteFile(src, nil, 0o600)
			}
			if err != nil {
				return err
			}
			pr.Info("created shared/%s (empty)", p)
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
	pr.Step("Linked shared paths: %s", strings.Join(a.cfg().Shared, " "))
	return nil
}
