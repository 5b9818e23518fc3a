package releases

import (
	"errors"
	"fmt"
)

var (
	// ErrUnsafePath means the tree holds a path that would write outside the release.
	ErrUnsafePath = errors.New("unsafe path in repository")
	// ErrExists means a release id is already taken on this host.
	ErrExists = errors.New("release id already taken on this host")
	// ErrTooLarge means the tree is larger than the checkout's limit.
	ErrTooLarge = errors.New("release too large")
	// ErrNotFound means no such release.
	ErrNotFound = errors.New("release not found")
	// ErrNoCurrent means the app has no live release yet.
	ErrNoCurrent = errors.New("no live release")
	// ErrBadID means a name is no release id ("vN", N from 1 to
	// MaxNumber, no leading zero): it names no release, and never a path.
	ErrBadID = fmt.Errorf("bad release id (want v1 to v%d): %w", MaxNumber, ErrNotFound)
)
