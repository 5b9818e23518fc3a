package control

import (
	"time"

	"github.com/deployer/deployer/releases"
)

// Requests of the control API. Their fields travel under their Go names,
// as they always have: clients and daemons of other versions meet during
// an upgrade.
type (
	DeployRequest struct {
		Rev, By string
		Fleet   bool // roll out to every host of the fleet
	}
	RollbackRequest struct{ To, By string }
	ReloadRequest   struct{ App, By string }
	CancelRequest   struct{ By string }
	CleanupRequest  struct {
		Keep   *int // nil: the configured keep_releases
		DryRun bool
		By     string
	}
	// UpgradeRequest is the body of POST /v1/upgrade.
	UpgradeRequest struct {
		Binary string `json:"binary"` // the new deployer binary; "" = the daemon's own path
	}
)

// CancelResult says what was cancelled.
type CancelResult struct {
	Cancelled string `json:"cancelled"`
}

// ReleaseList is the answer of GET /v1/apps/{app}/releases.
type ReleaseList struct {
	Live     string              `json:"live"`
	Releases []*releases.Release `json:"releases"`
}

// VersionInfo is what a daemon says of itself: the answer of GET /v1/version.
type VersionInfo struct {
	Version   string    `json:"version"`
	Commit    string    `json:"commit"`
	GoVersion string    `json:"go_version"`
	Started   time.Time `json:"started"`
	PID       int       `json:"pid"`
}
