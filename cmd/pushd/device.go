package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"pushd/component"
	"pushd/internal/store"
)

const deviceUsage = `usage: pushd device list [--config FILE] [JID]
       pushd device del [--config FILE] NODE|JID
list prints the push registrations (of one account with JID); del removes
one registration by node, or every registration of an account.`

const pushUsage = `usage: pushd push test [--config FILE] [--timeout 30s] JID
Sends a test push to every device of JID through the registry, the
dispatcher and the provider, and prints the provider's answers.`

// openRegistry opens the data directory of a node that is not running.
func openRegistry(cfg componentFileConfig) (*store.DB, *component.Registry, error) {
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "db")); err != nil {
		return nil, nil, fmt.Errorf("no database in %s: %w", cfg.DataDir, err)
	}
	db, err := store.Open(store.Config{Dir: filepath.Join(cfg.DataDir, "db"), Domain: cfg.Domain,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, nil, fmt.Errorf("open data dir (stop the node first: it holds the database): %w", err)
	}
	reg, err := component.OpenRegistry(db.Badger(), nil)
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return db, reg, nil
}

func cmdDevice(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, deviceUsage)
		return flag.ErrHelp
	}
	verb := args[0]
	fs := flag.NewFlagSet("device "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (TOML)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch {
	case verb == "list" && fs.NArg() <= 1, verb == "del" && fs.NArg() == 1:
	default:
		fmt.Fprintln(stderr, deviceUsage)
		return flag.ErrHelp
	}
	cfg, err := loadComponentConfig(*configPath, false)
	if err != nil {
		return err
	}
	db, reg, err := openRegistry(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	if verb == "del" {
		return deleteDevices(reg, fs.Arg(0), stdout)
	}
	var devs []component.Device
	if fs.NArg() == 1 {
		devs, err = reg.ByAccount(strings.ToLower(fs.Arg(0)))
	} else {
		devs, err = reg.List()
	}
	if err != nil {
		return err
	}
	printDevices(stdout, devs)
	return nil
}

// printDevices writes one line per registration. Accounts are shown as a
// tag of their keyed hash: the store has no JID to show (S3).
func printDevices(w io.Writer, devs []component.Device) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPROVIDER\tACCOUNT\tKIND\tREGION\tKEY\tVOIP\tUPDATED")
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%t\t%s\n", d.Node, d.Provider, component.AccountTag(d.Account),
			orDash(d.Kind), orDash(d.Region), len(d.Key) > 0, d.VoIPToken != "", d.Updated.UTC().Format(time.RFC3339))
	}
	_ = tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func deleteDevices(reg *component.Registry, what string, stdout io.Writer) error {
	if !strings.Contains(what, "@") {
		if err := reg.Remove(what); err != nil {
			if errors.Is(err, component.ErrNotFound) {
				return fmt.Errorf("no registration with node %q", what)
			}
			return err
		}
		fmt.Fprintln(stdout, "removed 1 registration")
		return nil
	}
	devs, err := reg.ByAccount(strings.ToLower(what))
	if err != nil {
		return err
	}
	if len(devs) == 0 {
		return errors.New("no registration for that account")
	}
	for _, d := range devs {
		if err := reg.Remove(d.Node); err != nil && !errors.Is(err, component.ErrNotFound) {
			return err
		}
	}
	fmt.Fprintf(stdout, "removed %d registration(s)\n", len(devs))
	return nil
}

func cmdPush(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "test" {
		fmt.Fprintln(stderr, pushUsage)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("push test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (TOML)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the providers' answers")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, pushUsage)
		return flag.ErrHelp
	}
	cfg, err := loadComponentConfig(*configPath, false)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.Log.Level, stderr)
	if err != nil {
		return err
	}
	db, _, err := openRegistry(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	return pushTest(ctx, cfg.pushFileConfig, db, fs.Arg(0), stdout, log)
}

// pushTest sends the test push through a push stack on db and prints
// the answers. The stack has no router link: only the dispatcher runs.
func pushTest(ctx context.Context, cfg pushFileConfig, db *store.DB, account string, stdout io.Writer, log *slog.Logger) error {
	domain := cfg.Push.Domain
	if domain == "" {
		domain = "push.localhost"
	}
	s, err := startPush(cfg, db, pushOptions{Domain: domain, Secret: "unused", Router: "unused:0", Logger: log})
	if err != nil {
		return err
	}
	defer s.close()
	res, err := component.TestPush(ctx, s.registry, s.dispatcher, s.recorder, strings.ToLower(account))
	if errors.Is(err, component.ErrNotFound) {
		return errors.New("no registration for that account")
	}
	if err != nil {
		return err
	}
	failed := false
	for _, r := range res {
		fmt.Fprintf(stdout, "node %s provider %s tid %s\n", r.Node, r.Provider, r.TrackingID)
		for i, o := range r.Attempts {
			line := fmt.Sprintf("  attempt %d: %s status %d", i+1, o.Result, o.Status)
			if o.Reason != "" {
				line += " reason " + o.Reason
			}
			if o.Err != nil {
				line += " error " + o.Err.Error()
			}
			fmt.Fprintln(stdout, line)
		}
		if r.Err != nil {
			fmt.Fprintf(stdout, "  error: %v\n", r.Err)
			failed = true
		} else if n := len(r.Attempts); n == 0 || r.Attempts[n-1].Result.String() != "delivered" {
			failed = true
		}
	}
	if failed {
		return errors.New("test push not delivered")
	}
	return nil
}
