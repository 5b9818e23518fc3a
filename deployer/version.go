package deployer

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// VersionInfo is what a daemon says of itself (GET /v1/version).
type VersionInfo struct {
	Version   string    `json:"version"`
	Commit    string    `json:"commit"`
	GoVersion string    `json:"go_version"`
	Started   time.Time `json:"started"`
	PID       int       `json:"pid"`
}

// Version asks the daemon which deployer it is.
func (c *Client) Version(ctx context.Context) (*VersionInfo, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/version", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v VersionInfo
	return &v, json.NewDecoder(resp.Body).Decode(&v)
}

// Upgrade asks the daemon to hand over to the binary at path ("" = its own
// executable path), copying its progress to out.
func (c *Client) Upgrade(ctx context.Context, binary string, out io.Writer) error {
	return c.streamed(ctx, "/v1/upgrade", struct {
		Binary string `json:"binary"`
	}{binary}, out)
}
