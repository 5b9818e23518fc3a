package control

import (
	"errors"
	"net/http"

	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/releases"
)

// CodeOther is the code of an error that wraps none of the sentinels below.
const CodeOther = "error"

// codes names each sentinel that crosses the socket, with the status a
// non-streamed reply carries for it. The first entry an error matches
// names it, so an error that wraps several travels as the earliest. Codes
// are part of the wire format: add, never rename.
var codes = []struct {
	code   string
	err    error
	status int
}{
	{"unknown_app", deployer.ErrUnknownApp, http.StatusNotFound},
	{"closed", deployer.ErrClosed, http.StatusServiceUnavailable},
	{"lock_timeout", deployer.ErrLockTimeout, http.StatusConflict},
	{"nothing_to_cancel", deployer.ErrNothingToCancel, http.StatusConflict},
	{"ref_moved", deployer.ErrRefMoved, http.StatusConflict},
	{"no_target", deployer.ErrNoTarget, http.StatusConflict},
	{"not_live", deployer.ErrNotLive, http.StatusConflict},
	{"build", deployer.ErrBuild, http.StatusUnprocessableEntity},
	{"no_start", deployer.ErrNoStart, http.StatusUnprocessableEntity},
	{"release_not_found", releases.ErrNotFound, http.StatusNotFound},
	{"unsafe_path", releases.ErrUnsafePath, http.StatusUnprocessableEntity},
	{"bad_request", ErrBadRequest, http.StatusBadRequest},
}

// codeOf is the code and reply status of err.
func codeOf(err error) (string, int) {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code, c.status
		}
	}
	return CodeOther, http.StatusInternalServerError
}

// sentinel is the error code names, or nil for CodeOther and codes this
// client does not know (a newer daemon's).
func sentinel(code string) error {
	for _, c := range codes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}
