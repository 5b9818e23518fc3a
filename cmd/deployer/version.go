package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/deployer/deployer/control"
	"github.com/deployer/deployer/internal/buildinfo"
	"github.com/spf13/cobra"
)

// versionOutput is `deployer version --json`: the client's version and, if
// the daemon answers, the daemon's (null otherwise).
type versionOutput struct {
	Client buildinfo.Info       `json:"client"`
	Daemon *control.VersionInfo `json:"daemon"`
}

func versionCmd() *cobra.Command {
	var asJSON, clientOnly bool
	c := &cobra.Command{
		Use:   "version [--json]",
		Short: "this binary's version and the running daemon's",
		Args:  usage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := versionOutput{Client: buildinfo.Get()}
			var derr error
			if !clientOnly {
				if cl, err := client(cmd); err != nil {
					derr = err
				} else {
					out.Daemon, derr = cl.Version(cmd.Context())
				}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "client: deployer %s (commit %s, %s)\n", out.Client.Version, orUnknown(out.Client.Commit), out.Client.GoVersion)
			switch {
			case clientOnly:
			case out.Daemon != nil:
				d := out.Daemon
				fmt.Fprintf(w, "daemon: deployer %s (commit %s, %s), pid %d, up since %s\n", d.Version, orUnknown(d.Commit),
					d.GoVersion, d.PID, d.Started.Local().Format(time.DateTime))
			default:
				fmt.Fprintf(w, "daemon: not answering (%v)\n", derr)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&clientOnly, "client", false, "only this binary's version; do not ask the daemon")
	return c
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func upgradeCmd() *cobra.Command {
	var binary string
	c := &cobra.Command{
		Use:   "upgrade [--binary PATH]",
		Short: "replace the running daemon with the binary at PATH (default: its own path), keeping every app up",
		Args:  usage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := client(cmd)
			if err != nil {
				return err
			}
			if binary != "" { // the daemon may run in another directory
				if binary, err = filepath.Abs(binary); err != nil {
					return err
				}
			}
			before, err := cl.Version(cmd.Context())
			if err != nil {
				return err
			}
			if err := cl.Upgrade(cmd.Context(), binary, cmd.OutOrStdout()); err != nil {
				return err
			}
			return waitNewDaemon(cmd.Context(), cl, before.PID, cmd)
		},
	}
	c.Flags().StringVar(&binary, "binary", "", "the new deployer binary (default: the daemon's executable path)")
	return c
}

// waitNewDaemon polls the control socket until a daemon other than old
// answers: connections made meanwhile wait in the socket's queue.
func waitNewDaemon(ctx context.Context, cl *control.Client, old int, cmd *cobra.Command) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		v, err := cl.Version(ctx)
		if err == nil && v.PID != old {
			fmt.Fprintf(cmd.OutOrStdout(), "deployer upgraded: daemon %s, pid %d\n", v.Version, v.PID)
			return nil
		}
		if err != nil && !errors.Is(err, control.ErrDaemonDown) {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the new daemon did not answer within a minute: %w", errors.Join(last, ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
