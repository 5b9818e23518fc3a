package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/deployer/deployer/control"
	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/fleet"
	"github.com/deployer/deployer/hooks"
	"github.com/deployer/deployer/hooks/gitserver"
	"github.com/deployer/deployer/internal/escape"
	"github.com/spf13/cobra"
)

// socketPath is DEPLOYER_SOCKET, else data_dir/deployer.sock of the config.
func socketPath(cmd *cobra.Command) (string, error) {
	if s := os.Getenv("DEPLOYER_SOCKET"); s != "" {
		return s, nil
	}
	cfg, err := loadConfig(cmd)
	if err != nil {
		return "", err
	}
	return filepath.Join(cfg.DataDir, "deployer.sock"), nil
}

func statusCmd() *cobra.Command {
	var asJSON, wholeFleet bool
	c := &cobra.Command{
		Use:   "status [APP]",
		Short: "apps, live release and workers",
		Args:  usage(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			sock, err := socketPath(cmd)
			if err != nil {
				return err
			}
			if wholeFleet {
				return fleetStatus(cmd, control.NewClient(sock), args, asJSON)
			}
			all, err := control.NewClient(sock).Status(cmd.Context())
			if err != nil {
				return err
			}
			var st []deployer.Status
			for _, s := range all {
				if len(args) == 0 || s.App == args[0] {
					st = append(st, s)
				}
			}
			if len(args) == 1 && len(st) == 0 {
				return fmt.Errorf("no app %q", args[0])
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "APP\tLIVE\tLISTEN\tWORKERS\tLAST DEPLOY")
			for _, s := range st {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", s.App, orDash(s.Live), strings.Join(s.Listen, ","), len(s.Workers), lastDeploy(s))
			}
			tw.Flush()
			fmt.Fprintln(cmd.OutOrStdout())
			tw = tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "APP\tWORKER\tPID\tRELEASE\tSTATE\tUPTIME\tRESTARTS")
			for _, s := range st {
				for _, w := range s.Workers {
					state := string(w.State)
					if !w.KillAt.IsZero() {
						state += fmt.Sprintf(" (killed in %s)", max(0, time.Until(w.KillAt)).Round(time.Second))
					}
					fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%d\n", s.App, w.Index, w.PID, w.Release, state,
						time.Since(w.Started).Round(time.Second), w.Restarts)
				}
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&wholeFleet, "fleet", false, "every host of the fleet: which release is live where")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func hookCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "hook proc-receive|post-receive",
		Short:  "git's hooks (run by git, not by hand)",
		Hidden: true,
		Args:   usage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch args[0] {
			case "proc-receive":
				return hooks.ProcReceive(cmd.Context(), os.Stdin, os.Stdout, os.Stderr, os.Getenv)
			case "post-receive":
				return hooks.PostReceive(os.Stdin, os.Stdout, os.Getenv)
			}
			return usageError{fmt.Errorf("unknown hook %q", args[0])}
		},
	}
}

func tokenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "token NAME TOKEN",
		Short: "print the tokens_file line for a pusher NAME with TOKEN",
		Args:  usage(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), gitserver.HashToken(args[0], args[1]))
			return nil
		},
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func lastDeploy(s deployer.Status) string {
	e := s.LastDeploy
	if e == nil {
		return "-"
	}
	out := fmt.Sprintf("%s %s by %s, %s ago", e.Event, e.Release, escape.Controls(e.By), time.Since(e.Time).Round(time.Second))
	if e.Event == "failure" {
		out += ": " + trim(e.Detail, 60)
	}
	return out
}

// fleetStatus prints which release of each app is live on each host of the
// fleet, and where they disagree.
func fleetStatus(cmd *cobra.Command, c *control.Client, args []string, asJSON bool) error {
	res, err := c.FleetStatus(cmd.Context())
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Hosts []fleet.Result      `json:"hosts"`
			Split map[string][]string `json:"split"`
		}{res, fleet.Split(res)})
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tAPP\tLIVE\tREVISION")
	for _, r := range res {
		host := escape.Controls(r.Host)
		if r.Self {
			host += " (this host)"
		}
		if r.State == nil {
			fmt.Fprintf(tw, "%s\t-\t-\tunreachable: %s\n", host, escape.Controls(r.Error))
			continue
		}
		for _, a := range r.State.Apps {
			if len(args) == 1 && a.App != args[0] {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", host, escape.Controls(a.App), orDash(escape.Controls(a.Live)), orDash(shortRev(a.Revision)))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	split := fleet.Split(res)
	for _, app := range slices.Sorted(maps.Keys(split)) {
		if len(args) == 1 && app != args[0] {
			continue
		}
		fmt.Fprintf(cmd.OutOrStdout(), "\nsplit: %s differs on %s (run deployer rollback %s --fleet, or push, to converge)\n",
			app, strings.Join(split[app], ", "), app)
	}
	return nil
}

// fleetReleases prints app's releases on each host of the fleet, the live
// one marked.
func fleetReleases(cmd *cobra.Command, c *control.Client, app string, asJSON bool) error {
	res, err := c.FleetStatus(cmd.Context())
	if err != nil {
		return err
	}
	type hostReleases struct {
		Host     string          `json:"host"`
		Live     string          `json:"live,omitempty"`
		Releases []fleet.Release `json:"releases"`
		Error    string          `json:"error,omitempty"`
	}
	var out []hostReleases
	for _, r := range res {
		h := hostReleases{Host: r.Host, Error: r.Error, Releases: []fleet.Release{}}
		if r.State != nil {
			for _, a := range r.State.Apps {
				if a.App == app {
					h.Live, h.Releases = a.Live, append(h.Releases, a.Releases...)
				}
			}
		}
		out = append(out, h)
	}
	if asJSON {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\t\tID\tREVISION\tSTATUS")
	for _, h := range out {
		if h.Error != "" {
			fmt.Fprintf(tw, "%s\t\t-\t-\tunreachable: %s\n", escape.Controls(h.Host), escape.Controls(h.Error))
			continue
		}
		for _, r := range h.Releases {
			mark := ""
			if r.ID == h.Live {
				mark = "*"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", escape.Controls(h.Host), mark, escape.Controls(r.ID), shortRev(r.Revision), escape.Controls(r.Status))
		}
	}
	return tw.Flush()
}

// fleetOp runs op, a fleet-wide operation, with its progress on stdout; or,
// asJSON, with its progress on stderr and then, on stdout, its outcome and
// where each host stands. The exit status is op's either way.
func fleetOp(cmd *cobra.Command, c *control.Client, asJSON bool, op func(out io.Writer) error) error {
	if !asJSON {
		return op(cmd.OutOrStdout())
	}
	err := op(cmd.ErrOrStderr())
	outcome := struct {
		OK    bool                `json:"ok"`
		Error string              `json:"error,omitempty"`
		Hosts []fleet.Result      `json:"hosts"`
		Split map[string][]string `json:"split"`
	}{OK: err == nil}
	if err != nil {
		outcome.Error = err.Error()
	}
	if res, serr := c.FleetStatus(cmd.Context()); serr == nil {
		outcome.Hosts, outcome.Split = res, fleet.Split(res)
	}
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	if jerr := enc.Encode(outcome); jerr != nil {
		return jerr
	}
	return err
}
