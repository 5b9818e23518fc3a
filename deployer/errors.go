package deployer

import "errors"

var (
	// ErrUnknownApp means no app of that name is configured.
	ErrUnknownApp = errors.New("unknown app")
	// ErrLockTimeout means another deploy held the app's lock too long.
	ErrLockTimeout = errors.New("another deploy is in progress")
	// ErrBuild means the build command failed.
	ErrBuild = errors.New("build failed")
	// ErrNoStart means neither start nor a Procfile web: line was found.
	ErrNoStart = errors.New("no start command")
	// ErrNotAFile means a path the daemon reads from a commit is a
	// symlink, directory or submodule there, not a regular file.
	ErrNotAFile = errors.New("not a regular file")
	// ErrRefMoved means the deploy branch changed under the deploy.
	ErrRefMoved = errors.New("deploy branch moved")
	// ErrClosed means the daemon is shutting down.
	ErrClosed = errors.New("daemon is shutting down")
	// ErrNoTarget means there is no release to roll back to.
	ErrNoTarget = errors.New("no release to roll back to")
	// ErrNotLive means the app has no live release.
	ErrNotLive = errors.New("no live release")
	// ErrFleet means a peer of the fleet cannot take part in a rollout.
	ErrFleet = errors.New("fleet rollout refused")
	// ErrNotShipped means a peer was asked to put live a release that no
	// rollout shipped to it, or one that already went live or failed.
	ErrNotShipped = errors.New("not a shipped release waiting to go live")
	// ErrPeerLost means a peer stopped answering while it ran a step of a
	// rollout: whether the step happened there is unknown.
	ErrPeerLost = errors.New("lost contact with the host during the step: it may or may not have happened there")
	// ErrNothingToCancel means no deploy, rollback or reload is running.
	ErrNothingToCancel = errors.New("nothing to cancel")
)
