// Command deployer is the deployer daemon and its client (SPEC §2).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/internal/escape"
	"github.com/spf13/cobra"
)

// usageError marks bad command-line use: exit code 2.
type usageError struct{ error }

func main() {
	root := &cobra.Command{
		Use:           "deployer",
		Short:         "zero-downtime git push deploys",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringP("config", "c", "", "config file (default ./deployer.yaml, then /etc/deployer/deployer.yaml)")
	root.Args = cobra.ArbitraryArgs
	root.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown command %q; see deployer --help", args[0])}
		}
		return usageError{errors.New("missing command; see deployer --help")}
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(serveCmd(), checkCmd(), statusCmd(), releasesCmd(), rollbackCmd(), deployCmd(), reloadCmd(), cleanupCmd(), logsCmd(), cancelCmd(), hookCmd(), tokenCmd(), versionCmd(), upgradeCmd(), fdstoreCmd())
	if err := root.ExecuteContext(context.Background()); err != nil {
		// The daemon's errors can quote a commit or a failure reason.
		fmt.Fprintln(os.Stderr, "deployer:", escape.Controls(err.Error()))
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usage makes an argument-count error a usage error (exit 2).
func usage(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// loadConfig loads the file named by -c (or the default search), as every
// command that needs the config does.
func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	file, _ := cmd.Flags().GetString("config")
	return config.Load(file)
}
