package releases

import "errors"

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
)
