package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/control"
	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/hooks"
	"github.com/deployer/deployer/hooks/gitserver"
	"github.com/gliderlabs/ssh"
	"github.com/spf13/cobra"
)

func serveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "run the daemon: git receivers, worker pools, control socket",
		Args:  usage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			return serve(cfg)
		},
	}
}

func newLogger(cfg *config.Config) *slog.Logger {
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

func serve(cfg *config.Config) error {
	log := newLogger(cfg)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	hookDir := filepath.Join(cfg.DataDir, "hooks")
	if err := os.MkdirAll(hookDir, 0o700); err != nil {
		return fmt.Errorf("hooks dir: %w", err)
	}
	for _, h := range hooks.Hooks {
		if err := os.WriteFile(filepath.Join(hookDir, h), []byte(hooks.HookScript(exe, h)), 0o700); err != nil {
			return fmt.Errorf("write hook: %w", err)
		}
	}

	d, err := deployer.New(cfg, log)
	if err != nil {
		return err
	}
	sock := filepath.Join(cfg.DataDir, "deployer.sock")
	ctl, err := control.ListenControl(sock)
	if err != nil {
		d.Shutdown(context.Background())
		return err
	}
	ctlSrv := &http.Server{Handler: control.NewMux(d)}
	go ctlSrv.Serve(ctl)

	var gitSrv *http.Server
	if cfg.Git.HTTPListen != "" {
		ln, err := net.Listen("tcp", cfg.Git.HTTPListen)
		if err != nil {
			ctlSrv.Close()
			d.Shutdown(context.Background())
			return fmt.Errorf("git.http_listen: %w", err)
		}
		gitSrv = &http.Server{
			Handler: &gitserver.HTTP{
				Apps: d, Tokens: gitserver.Tokens{File: cfg.Git.TokensFile}, Socket: sock, HookDir: hookDir,
				MaxPack: int64(cfg.Git.MaxPackSize), Log: log, AuthDelay: 300 * time.Millisecond,
			},
			ReadHeaderTimeout: 30 * time.Second,
		}
		go func() {
			var err error
			if cfg.Git.TLSCert != "" {
				err = gitSrv.ServeTLS(ln, cfg.Git.TLSCert, cfg.Git.TLSKey)
			} else {
				err = gitSrv.Serve(ln)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				log.Error("git http", "err", err)
			}
		}()
		if cfg.Git.TokensFile == "" {
			log.Warn("git.tokens_file is not set: every HTTP push will be refused")
		}
	}
	var sshSrv interface {
		Serve(net.Listener) error
		Shutdown(context.Context) error
	}
	if cfg.Git.SSHListen != "" {
		hostKey := cfg.Git.SSHHostKey
		if hostKey == "" {
			hostKey = filepath.Join(cfg.DataDir, "ssh_host_ed25519_key")
		}
		srv, err := (&gitserver.SSH{
			Apps: d, AuthorizedKeys: cfg.Git.AuthorizedKeys, Socket: sock, HookDir: hookDir,
			MaxPack: int64(cfg.Git.MaxPackSize), Log: log, AuthDelay: 300 * time.Millisecond,
		}).Server(hostKey)
		if err == nil {
			var ln net.Listener
			if ln, err = net.Listen("tcp", cfg.Git.SSHListen); err == nil {
				sshSrv = srv
				go func() {
					if err := srv.Serve(ln); err != nil && !errors.Is(err, ssh.ErrServerClosed) {
						log.Error("git ssh", "err", err)
					}
				}()
			}
		}
		if err != nil {
			if gitSrv != nil {
				gitSrv.Close()
			}
			ctlSrv.Close()
			d.Shutdown(context.Background())
			return fmt.Errorf("git.ssh_listen: %w", err)
		}
		if cfg.Git.AuthorizedKeys == "" {
			log.Warn("git.authorized_keys is not set: every SSH push will be refused")
		}
	}
	pidFile := filepath.Join(cfg.DataDir, "deployer.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		log.Error("pid file", "err", err)
	}
	log.Info("deployer started", "pid", os.Getpid(), "git_http", cfg.Git.HTTPListen, "git_ssh", cfg.Git.SSHListen, "socket", sock, "data_dir", cfg.DataDir, "config", cfg.File)
	if len(cfg.Apps) == 0 {
		log.Info("no apps configured: add one under apps: in deployer.yaml (see README), then send SIGHUP")
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2, syscall.SIGHUP)
	// One SIGHUP or SIGUSR2 at a time is enough: the next one waits its turn
	// in the channel, and the app locks serialise the work.
	started := make(chan struct{})
	go func() { d.Start(); close(started) }()
	for sig := range sigs {
		if sig == syscall.SIGTERM || sig == syscall.SIGINT {
			log.Info("stopping: draining workers (signal again to force)", "signal", sig.String())
			break
		}
		switch sig {
		case syscall.SIGUSR2:
			log.Info("SIGUSR2: reloading every app")
			go func() {
				<-started
				if err := d.Reload(context.Background(), "", "SIGUSR2", io.Discard); err != nil {
					log.Error("reload", "err", err)
				}
			}()
		case syscall.SIGHUP:
			log.Info("SIGHUP: re-reading the config", "file", cfg.File)
			go func() {
				<-started
				next, err := config.Load(cfg.File)
				if err != nil {
					log.Error("config reload rejected; the running state is unchanged", "err", err)
					return
				}
				if err := d.Reconfigure(next); err != nil {
					log.Error("config reload", "err", err)
					return
				}
				log.Info("config reloaded")
			}()
		}
	}
	go func() {
		// Only a second SIGTERM or SIGINT forces; a SIGHUP from logrotate
		// or a stray SIGUSR2 during the drain is ignored.
		for sig := range sigs {
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				break
			}
			log.Info("stopping: signal ignored", "signal", sig.String())
		}
		log.Warn("forced stop")
		os.Exit(1)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if gitSrv != nil {
		gitSrv.Shutdown(ctx)
	}
	if sshSrv != nil {
		sshSrv.Shutdown(ctx)
	}
	cancel()
	<-started
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = d.Shutdown(ctx)
	ctlSrv.Close()
	os.Remove(sock)
	os.Remove(pidFile)
	log.Info("stopped")
	return err
}
