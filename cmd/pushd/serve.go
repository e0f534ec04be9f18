package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
)

func cmdServe(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (TOML); without it pushd runs on embedded defaults")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the node's whole run to this `file` (benches)")
	memprofile := fs.String("memprofile", "", "write a heap profile to this `file` when the node stops (benches)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The same checks as `pushd config check`, all reported at once.
	cfg, errs := serveConfig(*configPath)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	log, err := newLogger(cfg.Log.Level, stderr)
	if err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	n, err := startNode(cfg, log)
	if err != nil {
		return err
	}
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *memprofile == "" {
		return n.Run(sig)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-sig.Done()
		// Before the node lets go of anything: what it held while it
		// served, not what is left after shutdown.
		if f, err := os.Create(*memprofile); err == nil {
			runtime.GC()
			_ = pprof.WriteHeapProfile(f)
			_ = f.Close()
		}
		cancel()
	}()
	return n.Run(ctx)
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("config: log.level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
