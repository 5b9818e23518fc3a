package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/deployer/deployer/control"
	"github.com/deployer/deployer/internal/escape"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
)

// who names the person running a client command, for the ledger: under
// sudo, the user who ran sudo. The daemon adds the user the command runs
// as, from the control socket's peer credentials.
func who() string {
	if u := os.Getenv("SUDO_USER"); u != "" && os.Geteuid() == 0 {
		return u
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return fmt.Sprintf("uid %d", os.Getuid())
}

func client(cmd *cobra.Command) (*control.Client, error) {
	sock, err := socketPath(cmd)
	if err != nil {
		return nil, err
	}
	return control.NewClient(sock), nil
}

func rollbackCmd() *cobra.Command {
	var to string
	var wholeFleet, asJSON bool
	c := &cobra.Command{
		Use:   "rollback APP [--to ID]",
		Short: "make the previous good release (or ID) live again, no rebuild",
		Args:  usage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := client(cmd)
			if err != nil {
				return err
			}
			if wholeFleet {
				return fleetOp(cmd, cl, asJSON, func(out io.Writer) error {
					return cl.FleetRollback(cmd.Context(), args[0], to, who(), out)
				})
			}
			return cl.Rollback(cmd.Context(), args[0], to, who(), cmd.OutOrStdout())
		},
	}
	c.Flags().StringVar(&to, "to", "", "release id to roll back to, e.g. v3")
	c.Flags().BoolVar(&wholeFleet, "fleet", false, "every host of the fleet, this one first, all or nothing")
	c.Flags().BoolVar(&asJSON, "json", false, "with --fleet: progress on stderr, then the outcome and where each host stands as JSON")
	return c
}

func deployCmd() *cobra.Command {
	var wholeFleet, asJSON bool
	c := &cobra.Command{
		Use:   "deploy APP [REV] [--fleet]",
		Short: "build and deploy a revision already in the app's repository (default: the deploy branch)",
		Args:  usage(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := client(cmd)
			if err != nil {
				return err
			}
			rev := ""
			if len(args) == 2 {
				rev = args[1]
			}
			if wholeFleet {
				return fleetOp(cmd, cl, asJSON, func(out io.Writer) error {
					return cl.DeployRev(cmd.Context(), args[0], rev, who(), true, out)
				})
			}
			return cl.DeployRev(cmd.Context(), args[0], rev, who(), false, cmd.OutOrStdout())
		},
	}
	c.Flags().BoolVar(&wholeFleet, "fleet", false, "build here once and roll out to every host of the fleet, this one first, all or nothing")
	c.Flags().BoolVar(&asJSON, "json", false, "with --fleet: progress on stderr, then the outcome and where each host stands as JSON")
	return c
}

func reloadCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reload [APP]",
		Short: "fresh workers of the live release, then retire the old ones (as SIGUSR2)",
		Args:  usage(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := client(cmd)
			if err != nil {
				return err
			}
			app := ""
			if len(args) == 1 {
				app = args[0]
			}
			return cl.Reload(cmd.Context(), app, who(), cmd.OutOrStdout())
		},
	}
}

func cleanupCmd() *cobra.Command {
	var keep int
	var dryRun, asJSON bool
	c := &cobra.Command{
		Use:   "cleanup APP [--keep N] [--dry-run]",
		Short: "prune old releases now, by the retention rules",
		Args:  usage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := client(cmd)
			if err != nil {
				return err
			}
			var keepp *int
			if cmd.Flags().Changed("keep") {
				if keep < 0 {
					return usageError{fmt.Errorf("--keep must not be negative")}
				}
				keepp = &keep
			}
			res, err := cl.Cleanup(cmd.Context(), args[0], keepp, dryRun, who())
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
			}
			verb := "pruned"
			if dryRun {
				verb = "would prune"
			}
			if len(res.Pruned) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing to prune")
			}
			for _, id := range res.Pruned {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %s\n", verb, id, res.Why[id])
			}
			if !dryRun && len(res.Pruned) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "freed %s\n", humanize.IBytes(uint64(res.Freed)))
			}
			return nil
		},
	}
	c.Flags().IntVar(&keep, "keep", 0, "keep this many good releases instead of keep_releases")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be pruned")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func releasesCmd() *cobra.Command {
	var asJSON, wholeFleet bool
	c := &cobra.Command{
		Use:   "releases APP [--json]",
		Short: "releases, newest first; the live one marked",
		Args:  usage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := client(cmd)
			if err != nil {
				return err
			}
			if wholeFleet {
				return fleetReleases(cmd, cl, args[0], asJSON)
			}
			l, err := cl.Releases(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(l)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "\tID\tREVISION\tSTATUS\tCREATED\tBUILD\tBY\tMESSAGE")
			for _, r := range l.Releases {
				mark := ""
				if r.ID == l.Live {
					mark = "*"
				}
				status := string(r.Status)
				if r.Status == "failed" && r.Reason != "" {
					status += " (" + trim(r.Reason, 40) + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1fs\t%s\t%s\n", mark, r.ID, shortRev(r.Revision), status,
					r.Created.Local().Format(time.DateTime), r.BuildSeconds, escape.Controls(r.Pusher), trim(r.Message, 50))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&wholeFleet, "fleet", false, "the releases on every host of the fleet")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func shortRev(r string) string {
	if len(r) > 7 {
		return r[:7]
	}
	return r
}

// trim makes text from a repository (a commit subject, a failure reason)
// fit a column: one line, its control characters escaped, at most n runes.
func trim(s string, n int) string {
	r := []rune(escape.Controls(strings.Join(strings.Fields(s), " ")))
	if len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return string(r)
}

func logsCmd() *cobra.Command {
	var build string
	var follow bool
	var lines int
	c := &cobra.Command{
		Use:   "logs APP [--build ID] [-f] [-n N]",
		Short: "worker output (the last lines, or following it), or a release's build log",
		Args:  usage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := client(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return cl.Logs(ctx, args[0], build, lines, follow, cmd.OutOrStdout())
		},
	}
	c.Flags().StringVar(&build, "build", "", "show the build log of this release, e.g. v3")
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	c.Flags().IntVarP(&lines, "lines", "n", 100, "how many of the last lines to show")
	return c
}

func cancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel APP",
		Short: "stop the app's running deploy, rollback or reload; the live release keeps serving",
		Args:  usage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := client(cmd)
			if err != nil {
				return err
			}
			what, err := cl.Cancel(cmd.Context(), args[0], who())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cancelled: %s\n", what)
			return nil
		},
	}
}
