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
	"pushd/internal/admin"
	"pushd/internal/store"
)

const deviceUsage = `usage: pushd device list [--config FILE] [JID]
       pushd device del [--config FILE] NODE|JID
list prints the push registrations (of one account with JID); del removes
one registration by node, or every registration of an account. While a
node runs they go through its admin API; otherwise the data directory is
opened directly.`

const pushUsage = `usage: pushd push test [--config FILE] [--timeout 30s] [--call] JID
Sends a test push to every device of JID through the registry, the
dispatcher and the provider, and prints the provider's answers (through
the running node's admin API when a node runs). With --call, the running
node sends each of the user's SIP push bindings a test VoIP call push (the
phone rings with "pushd test call", and is told to register to the node),
then its missed-call push, since no INVITE follows.`

// pushAdmin returns the running node's admin API when one answers, else
// the data directory opened directly (with a push stack for test pushes
// when cfg has a provider). done releases what it opened.
func pushAdmin(cfg componentFileConfig, log *slog.Logger) (admin.Devices, func(), error) {
	if c := adminClient(cfg.Admin.Listen, cfg.DataDir); c != nil {
		_, err := c.ListDevices("")
		switch {
		case err == nil:
			return c, func() {}, nil
		case errors.Is(err, admin.ErrNoPush):
			return nil, nil, err
		case !errors.Is(err, admin.ErrNoNode):
			return nil, nil, err
		}
	}
	db, reg, err := openRegistry(cfg)
	if err != nil {
		return nil, nil, err
	}
	return &localDevices{cfg: cfg.pushFileConfig, db: db, reg: reg, log: log}, func() { _ = db.Close() }, nil
}

// adminClient is the client of the admin API at listen with the token in
// dataDir; nil when either is missing (no node can be asked).
func adminClient(listen, dataDir string) *admin.Client {
	if listen == "" {
		return nil
	}
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		return nil
	}
	return &admin.Client{Addr: listen, Token: strings.TrimSpace(string(tok))}
}

// openRegistry opens the data directory of a node that is not running.
func openRegistry(cfg componentFileConfig) (*store.DB, *component.Registry, error) {
	db, err := openDataDir(cfg.DataDir, cfg.Domain)
	if err != nil {
		return nil, nil, err
	}
	reg, err := component.OpenRegistry(db.Badger(), nil)
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return db, reg, nil
}

// openDataDir opens the database of a node that is not running, for the
// operator commands.
func openDataDir(dataDir, domain string) (*store.DB, error) {
	if _, err := os.Stat(filepath.Join(dataDir, "db")); err != nil {
		return nil, fmt.Errorf("no database in %s: %w", dataDir, err)
	}
	db, err := store.Open(store.Config{Dir: filepath.Join(dataDir, "db"), Domain: domain,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, fmt.Errorf("open data dir (a node holds it, but its admin API at [admin] listen did not answer): %w", err)
	}
	return db, nil
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
	devs, done, err := pushAdmin(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer done()
	if verb == "del" {
		n, err := devs.DeleteDevices(strings.ToLower(fs.Arg(0)))
		switch {
		case errors.Is(err, admin.ErrNotFound) && strings.Contains(fs.Arg(0), "@"):
			return errors.New("no registration for that account")
		case errors.Is(err, admin.ErrNotFound):
			return fmt.Errorf("no registration with node %q", fs.Arg(0))
		case err != nil:
			return err
		}
		if n == 1 {
			fmt.Fprintln(stdout, "removed 1 registration")
		} else {
			fmt.Fprintf(stdout, "removed %d registration(s)\n", n)
		}
		return nil
	}
	list, err := devs.ListDevices(strings.ToLower(fs.Arg(0)))
	if err != nil {
		return err
	}
	printDevices(stdout, list)
	return nil
}

// printDevices writes one line per registration. Accounts are shown as a
// tag of their keyed hash: the store has no JID to show (S3).
func printDevices(w io.Writer, devs []admin.Device) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPROVIDER\tACCOUNT\tKIND\tREGION\tKEY\tVOIP\tUPDATED")
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%t\t%s\n", d.Node, d.Provider, d.AccountTag,
			orDash(d.Kind), orDash(d.Region), d.Key, d.VoIP, d.Updated.UTC().Format(time.RFC3339))
	}
	_ = tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmdPush(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "disable" || args[0] == "enable" || args[0] == "status") {
		return cmdPushSwitch(args[0], args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "test" {
		fmt.Fprintln(stderr, pushUsage+"\n\n"+pushSwitchUsage)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("push test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (TOML)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the providers' answers")
	testCall := fs.Bool("call", false, "send a test call to the user's SIP push bindings (through the running node)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, pushUsage)
		return flag.ErrHelp
	}
	cfg, log, err := pushCommandConfig(*configPath, stderr)
	if err != nil {
		return err
	}
	if *testCall {
		return pushTestCall(cfg, strings.ToLower(fs.Arg(0)), *timeout, stdout)
	}
	devs, done, err := pushAdmin(cfg, log)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res, err := devs.TestPush(ctx, strings.ToLower(fs.Arg(0)))
	if err != nil {
		return err
	}
	return printTestPush(stdout, res)
}

// pushTestCall is `pushd push test --call`: only a running node can, since
// the call push names the node the phone must register to.
func pushTestCall(cfg componentFileConfig, user string, timeout time.Duration, stdout io.Writer) error {
	c := adminClient(cfg.Admin.Listen, cfg.DataDir)
	if c == nil {
		return errors.New("push test --call: no running node to ask (admin listen and its token in the data directory)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := c.TestCall(ctx, user)
	if err != nil {
		return err
	}
	return printTestPush(stdout, res)
}

// pushCommandConfig reads the config of a `pushd push` command and makes
// its logger (to stderr).
func pushCommandConfig(path string, stderr io.Writer) (componentFileConfig, *slog.Logger, error) {
	cfg, err := loadComponentConfig(path, false)
	if err != nil {
		return cfg, nil, err
	}
	log, err := newLogger(cfg.Log.Level, stderr)
	return cfg, log, err
}

// printTestPush prints the answers of a test push; an error when one was
// not delivered.
func printTestPush(stdout io.Writer, res []admin.PushResult) error {
	failed := false
	for _, r := range res {
		if r.Type != "" {
			fmt.Fprintf(stdout, "binding %s %s push provider %s tid %s\n", r.Node, r.Type, r.Provider, r.TrackingID)
		} else {
			fmt.Fprintf(stdout, "node %s provider %s tid %s\n", r.Node, r.Provider, r.TrackingID)
		}
		for i, o := range r.Attempts {
			line := fmt.Sprintf("  attempt %d: %s status %d", i+1, o.Result, o.Status)
			if o.Reason != "" {
				line += " reason " + o.Reason
			}
			if o.Error != "" {
				line += " error " + o.Error
			}
			fmt.Fprintln(stdout, line)
		}
		if r.Error != "" {
			fmt.Fprintf(stdout, "  error: %s\n", r.Error)
		}
		failed = failed || !r.Delivered()
	}
	if failed {
		return errors.New("test push not delivered")
	}
	return nil
}

// pushTest sends the test push through a push stack on db and prints
// the answers. The stack has no router link: only the dispatcher runs.
func pushTest(ctx context.Context, cfg pushFileConfig, db *store.DB, account string, stdout io.Writer, log *slog.Logger) error {
	reg, err := component.OpenRegistry(db.Badger(), nil)
	if err != nil {
		return err
	}
	res, err := (&localDevices{cfg: cfg, db: db, reg: reg, log: log}).TestPush(ctx, account)
	if err != nil {
		return err
	}
	return printTestPush(stdout, res)
}

// localDevices is admin.Devices on a data directory no node is using.
type localDevices struct {
	cfg pushFileConfig
	db  *store.DB
	reg *component.Registry
	log *slog.Logger
}

func (l *localDevices) ListDevices(account string) ([]admin.Device, error) {
	return listDevices(l.reg, account)
}

func (l *localDevices) DeleteDevices(what string) (int, error) { return deleteDevices(l.reg, what) }

func (l *localDevices) TestPush(ctx context.Context, account string) ([]admin.PushResult, error) {
	domain := l.cfg.Push.Domain
	if domain == "" {
		domain = "push.localhost"
	}
	s, err := startPush(l.cfg, l.db, pushOptions{Domain: domain, Secret: "unused", Router: "unused:0", Logger: l.log})
	if err != nil {
		return nil, err
	}
	defer s.close()
	return (stackDevices{s}).TestPush(ctx, account)
}

// stackDevices is admin.Devices on a running push stack: what the node
// and `pushd component` serve on their admin API.
type stackDevices struct{ s *pushStack }

// pushAdminDevices is the admin API's view of a node's push stack; nil
// (no /api/devices) when the node runs no push provider.
func pushAdminDevices(s *pushStack) admin.Devices {
	if s == nil {
		return nil
	}
	return stackDevices{s}
}

func (d stackDevices) ListDevices(account string) ([]admin.Device, error) {
	return listDevices(d.s.registry, account)
}

func (d stackDevices) DeleteDevices(what string) (int, error) {
	return deleteDevices(d.s.registry, what)
}

func (d stackDevices) TestPush(ctx context.Context, account string) ([]admin.PushResult, error) {
	res, err := component.TestPush(ctx, d.s.registry, d.s.dispatcher, d.s.recorder, strings.ToLower(account))
	if errors.Is(err, component.ErrNotFound) {
		return nil, fmt.Errorf("%w: no registration for that account", admin.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	out := make([]admin.PushResult, len(res))
	for i, r := range res {
		out[i] = admin.PushResult{Node: r.Node, Provider: string(r.Provider), TrackingID: r.TrackingID}
		for _, o := range r.Attempts {
			a := admin.PushAttempt{Result: o.Result.String(), Status: o.Status, Reason: o.Reason}
			if o.Err != nil {
				a.Error = o.Err.Error()
			}
			out[i].Attempts = append(out[i].Attempts, a)
		}
		if r.Err != nil {
			out[i].Error = r.Err.Error()
		}
	}
	return out, nil
}

func listDevices(reg *component.Registry, account string) ([]admin.Device, error) {
	var devs []component.Device
	var err error
	if account != "" {
		devs, err = reg.ByAccount(strings.ToLower(account))
	} else {
		devs, err = reg.List()
	}
	if err != nil {
		return nil, err
	}
	out := make([]admin.Device, len(devs))
	for i, d := range devs {
		out[i] = admin.Device{Node: d.Node, Provider: string(d.Provider), AccountTag: component.AccountTag(d.Account),
			Kind: d.Kind, Region: d.Region, Key: len(d.Key) > 0, VoIP: d.VoIPToken != "", Updated: d.Updated}
	}
	return out, nil
}

// deleteDevices removes one registration by node, or every registration
// of an account (what contains "@").
func deleteDevices(reg *component.Registry, what string) (int, error) {
	if !strings.Contains(what, "@") {
		if err := reg.Remove(what); err != nil {
			if errors.Is(err, component.ErrNotFound) {
				return 0, fmt.Errorf("%w: no registration with node %q", admin.ErrNotFound, what)
			}
			return 0, err
		}
		return 1, nil
	}
	devs, err := reg.ByAccount(strings.ToLower(what))
	if err != nil {
		return 0, err
	}
	if len(devs) == 0 {
		return 0, fmt.Errorf("%w: no registration for that account", admin.ErrNotFound)
	}
	for _, d := range devs {
		if err := reg.Remove(d.Node); err != nil && !errors.Is(err, component.ErrNotFound) {
			return 0, err
		}
	}
	return len(devs), nil
}
