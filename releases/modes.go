package releases

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Modes of the app directory, for an app whose processes run as a user of
// their own (apps.APP.user) while the daemon is root: that user may walk
// through the app directory and releases/ to its own trees and to shared/
// (which the caller gives it), and may list and read nothing else. Other
// local users see no more.
const (
	appDirMode   = 0o711 // walk through, no listing
	releasesMode = 0o711 // walk through to a tree, no listing
	privateMode  = 0o700 // the repository and the logs
	sharedMode   = 0o700 // given to the app's user
)

// secure makes the app directory's folders and sets their modes, and
// tightens what older versions made readable by everyone: the metadata
// (which holds the app's env) and the ledger.
func secure(appDir string) error {
	if err := os.MkdirAll(appDir, appDirMode); err != nil {
		return err
	}
	modes := []struct {
		path string
		mode fs.FileMode
	}{
		{".", appDirMode}, {"releases", releasesMode}, {"logs", privateMode},
		{"logs/builds", privateMode}, {"shared", sharedMode}, {"repo.git", privateMode},
	}
	for _, m := range modes {
		p := filepath.Join(appDir, m.path)
		if m.path == "repo.git" { // made by git, by the caller
			if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
				continue
			}
		} else if err := os.Mkdir(p, m.mode); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", p)
		}
		if err := os.Chmod(p, m.mode); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(filepath.Join(appDir, "releases"))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".json") {
			if err := os.Chmod(filepath.Join(appDir, "releases", e.Name()), 0o600); err != nil {
				return err
			}
		}
	}
	if err := os.Chmod(filepath.Join(appDir, "history.jsonl"), 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
