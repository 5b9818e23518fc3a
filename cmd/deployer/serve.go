package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/fdstore"
	"github.com/deployer/deployer/server"
	"github.com/spf13/cobra"
)

func serveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "run the daemon: git receivers, worker pools, control socket",
		Args:  usage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			file, _ := cmd.Flags().GetString("config")
			cfg, err := loadServeConfig(file)
			if err != nil {
				return err
			}
			return runServer(cfg)
		},
	}
}

// loadServeConfig is the config the daemon runs on: loaded, validated, and
// with its credentials files readable.
func loadServeConfig(file string) (*config.Config, error) {
	cfg, err := config.Load(file)
	if err != nil {
		return nil, err
	}
	if err := cfg.CheckCredentials(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func newLogger(cfg *config.Config) *slog.Logger {
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

// runServer runs the daemon (package server) until SIGTERM/SIGINT (graceful: workers drain) or
// a handover to an upgraded daemon. SIGUSR2 reloads every app, SIGHUP
// re-reads the config. A second SIGTERM or SIGINT forces the exit.
func runServer(cfg *config.Config) error {
	log := newLogger(cfg)
	srv, err := server.New(cfg, log)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2, syscall.SIGHUP)
	stopped := make(chan error, 1)
	go handleSignals(srv, cfg.File, log, sigs, stopped)
	if err := srv.Serve(); !errors.Is(err, server.ErrServerClosed) {
		return err
	}
	select {
	case err := <-stopped:
		return err
	default:
		return nil // handed over to a new daemon
	}
}

func handleSignals(srv *server.Server, file string, log *slog.Logger, sigs chan os.Signal, stopped chan<- error) {
	for sig := range sigs {
		switch sig {
		case syscall.SIGUSR2:
			log.Info("SIGUSR2: reloading every app")
			go srv.Reload("SIGUSR2")
		case syscall.SIGHUP:
			log.Info("SIGHUP: re-reading the config", "file", file)
			go func() {
				next, err := loadServeConfig(file)
				if err != nil {
					log.Error("config reload rejected; the running state is unchanged", "err", err)
					return
				}
				if err := srv.Reconfigure(next); err != nil {
					log.Error("config reload", "err", err)
					return
				}
				log.Info("config reloaded")
			}()
		default:
			log.Info("stopping: draining workers (signal again to force)", "signal", sig.String())
			go forceOnSecondSignal(sigs, log)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			stopped <- srv.Shutdown(ctx)
			cancel()
			return
		}
	}
}

// forceOnSecondSignal exits at the next SIGTERM or SIGINT; a SIGHUP from
// logrotate or a stray SIGUSR2 during the drain is ignored.
func forceOnSecondSignal(sigs chan os.Signal, log *slog.Logger) {
	for sig := range sigs {
		if sig == syscall.SIGTERM || sig == syscall.SIGINT {
			break
		}
		log.Info("stopping: signal ignored", "signal", sig.String())
	}
	log.Warn("forced stop")
	os.Exit(1)
}

// fdstoreCmd is the descriptor keeper the daemon starts (package fdstore).
func fdstoreCmd() *cobra.Command {
	var socket string
	c := &cobra.Command{
		Use:    "fdstore --socket PATH",
		Short:  "the daemon's descriptor keeper (started by the daemon)",
		Hidden: true,
		Args:   usage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
			return fdstore.RunKeeper(socket, os.NewFile(3, "ready"))
		},
	}
	c.Flags().StringVar(&socket, "socket", "", "where to listen")
	_ = c.MarkFlagRequired("socket")
	return c
}
