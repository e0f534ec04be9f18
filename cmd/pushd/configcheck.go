package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"pushd/internal/store"
)

// The checks below are what `pushd serve` and `pushd component` run
// before they start anything, and all that `pushd config check` runs
// (BEHAVIOUR O7): one list, so a file the check passes does not fail at
// start for a reason the check could have seen. They read the files the
// config names and build the push providers (offline), but open no
// database, bind no port and write nothing.

// serveConfig loads path as `pushd serve` reads it and returns every
// problem found, not only the first.
func serveConfig(path string) (fileConfig, []error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return cfg, []error{err}
	}
	var errs problems
	if cfg.Storage.Sync != "" {
		if _, err := store.ParseSyncPolicy(cfg.Storage.Sync); err != nil {
			errs.add(fmt.Errorf("config: storage.sync: %w", err))
		}
	}
	errs.add(checkLogLevel(cfg.Log.Level))
	errs.add(checkDataDir(cfg.DataDir))
	errs.add(checkListen("c2s.listen", cfg.C2S.Listen))
	errs.add(checkListen("c2s.tls_listen", cfg.C2S.TLSListen))
	errs.add(checkListen("component.listen", cfg.Component.Listen))
	errs.add(checkListen("admin.listen", cfg.Admin.Listen))
	if cfg.C2S.CertFile != "" && cfg.C2S.KeyFile != "" {
		if _, err := tls.LoadX509KeyPair(cfg.C2S.CertFile, cfg.C2S.KeyFile); err != nil {
			errs.add(fmt.Errorf("config: c2s.cert_file/key_file: %w", err))
		}
	}
	if cfg.Cluster.enabled() {
		errs.add(checkListen("cluster.c2s_advertise", cfg.Cluster.C2SAdvertise))
		// The same mapping the node joins with: addresses, ports, key.
		_, err := clusterConfig(cfg, cfg.Admin.Listen, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		errs.add(err)
	}
	if cfg.APNS.Topic != "" || cfg.FCM.ProjectID != "" {
		errs.add(checkProviders(cfg.pushFileConfig))
	}
	return cfg, errs
}

// componentConfig loads path as `pushd component` reads it.
func componentConfig(path string) (componentFileConfig, []error) {
	cfg, err := loadComponentConfig(path, true)
	if err != nil {
		return cfg, []error{err}
	}
	var errs problems
	errs.add(checkLogLevel(cfg.Log.Level))
	errs.add(checkDataDir(cfg.DataDir))
	errs.add(checkListen("admin.listen", cfg.Admin.Listen))
	if _, _, err := net.SplitHostPort(cfg.Push.Router); err != nil {
		errs.add(fmt.Errorf("config: push.router %q: %w", cfg.Push.Router, err))
	}
	errs.add(checkProviders(cfg.pushFileConfig))
	return cfg, errs
}

type problems []error

func (p *problems) add(err error) {
	if err != nil {
		*p = append(*p, err)
	}
}

func checkLogLevel(level string) error {
	_, err := newLogger(level, io.Discard)
	return err
}

// checkDataDir refuses a data_dir that exists and is not a directory; one
// that does not exist yet is made at start.
func checkDataDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("config: data_dir: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("config: data_dir %s is not a directory", dir)
	}
	return nil
}

// checkListen wants host:port with a numeric port, or nothing (that
// listener is off).
func checkListen(key, addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("config: %s %q: %w", key, addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("config: %s %q: port must be a number from 0 to 65535", key, addr)
	}
	return nil
}

// checkProviders builds the configured push providers as start does (key
// files read and parsed, the APNS token signed) and closes them again.
func checkProviders(cfg pushFileConfig) error {
	_, closers, err := pushProviders(cfg)
	for _, c := range closers {
		c()
	}
	return err
}

const configUsage = `usage: pushd config check [--component] FILE
Checks FILE as pushd serve (or, with --component, pushd component) would
read it at start; prints "ok" or every problem found.`

// cmdConfig is `pushd config check`.
func cmdConfig(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, configUsage)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asComponent := fs.Bool("component", false, "check the file as pushd component reads it")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, configUsage)
		return flag.ErrHelp
	}
	path := fs.Arg(0)
	var errs []error
	if *asComponent {
		_, errs = componentConfig(path)
	} else {
		_, errs = serveConfig(path)
	}
	if len(errs) == 0 {
		fmt.Fprintln(stdout, "ok")
		return nil
	}
	for _, err := range errs {
		fmt.Fprintln(stderr, err)
	}
	return fmt.Errorf("config check: %d problem(s) in %s", len(errs), path)
}
