package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"pushd/component/sip"
	"pushd/internal/admin"
)

const sipUsage = `usage: pushd sip bindings [--config FILE] [USER]
Lists the SIP bindings (of one user): contact, transport, push provider,
whether a key is known, expiry. Push tokens are shown shortened. While a
node runs they come from its admin API; otherwise from the data directory.`

func cmdSIP(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "bindings" {
		fmt.Fprintln(stderr, sipUsage)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("sip bindings", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (TOML)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(stderr, sipUsage)
		return flag.ErrHelp
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	user := ""
	if fs.NArg() == 1 {
		j, err := userJID(strings.ToLower(fs.Arg(0)), cfg.Domain)
		if err != nil {
			return err
		}
		user = j.String()
	}
	list, err := sipBindings(cfg, user)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AOR\tCONTACT\tTRANSPORT\tPUSH\tTOKEN\tKEY\tEXPIRES")
	for _, b := range list {
		push := orDash(b.Provider)
		if b.VoIP {
			push += " voip"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%s\n", b.AOR, b.Contact, b.Transport, push, orDash(b.Token), b.Key,
			b.Expires.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// sipBindings asks the running node, else reads the data directory.
func sipBindings(cfg fileConfig, user string) ([]admin.Binding, error) {
	if c := adminClient(cfg.Admin.Listen, cfg.DataDir); c != nil {
		list, err := c.SIPBindings(user)
		if !errors.Is(err, admin.ErrNoNode) {
			return list, err
		}
	}
	db, err := openDataDir(cfg.DataDir, cfg.Domain)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	reg, err := sip.OpenRegistrar(db.Badger())
	if err != nil {
		return nil, err
	}
	return registrarBindings{r: reg}.SIPBindings(user)
}

// registrarBindings is a registrar as the admin API lists it, and the
// running SIP server (nil: none yet, or not this process) that sends test
// calls.
type registrarBindings struct {
	r      *sip.Registrar
	server func() *sip.Server
}

// TestCall is `pushd push test --call` on the running node.
func (rb registrarBindings) TestCall(ctx context.Context, user string) ([]admin.PushResult, error) {
	var s *sip.Server
	if rb.server != nil {
		s = rb.server()
	}
	if s == nil {
		return nil, admin.ErrNoSIP
	}
	res, err := s.TestCall(ctx, user)
	if errors.Is(err, sip.ErrNoPushBinding) {
		return nil, fmt.Errorf("%w: no SIP push binding for that user", admin.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	out := make([]admin.PushResult, len(res))
	for i, r := range res {
		out[i] = admin.PushResult{Node: r.Binding, Type: string(r.Type), Provider: string(r.Provider), TrackingID: r.TrackingID}
		if r.Err != nil {
			out[i].Error = r.Err.Error()
			continue
		}
		out[i].Attempts = []admin.PushAttempt{{Result: r.Final.Outcome, Status: r.Final.Status, Reason: r.Final.Reason}}
	}
	return out, nil
}

func (rb registrarBindings) SIPBindings(user string) ([]admin.Binding, error) {
	var out []admin.Binding
	for _, b := range rb.r.All() {
		if user != "" && b.AOR != user {
			continue
		}
		a := admin.Binding{AOR: b.AOR, Contact: b.Contact, Transport: b.Transport, Instance: b.Instance,
			Key: len(b.Key) > 0, Expires: b.Expires}
		if p := b.Push; p != nil {
			a.Provider, a.Token, a.VoIP = string(p.Provider), shorten(p.PRID), p.VoIP()
		}
		out = append(out, a)
	}
	return out, nil
}

// shorten keeps the ends of a push token: enough to tell two apart, not
// enough to push to.
func shorten(tok string) string {
	if len(tok) <= 12 {
		return "…"
	}
	return tok[:4] + "…" + tok[len(tok)-4:]
}
