package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"pushd/cluster"
	"pushd/component/dispatch"
	"pushd/internal/admin"
)

// The push switch (BEHAVIOUR O2, issue 14): `pushd push disable|enable|
// status`, the admin API behind it, and its copy on every member. The
// state and the gate are component/dispatch's; this file stores it where
// the node runs, sends a change to every member at once, and gives a
// member that joins (or comes back) the current state with the accounts.

// switchAdmin is the admin API's push switch; broadcast (nil alone)
// copies a change to the other members before the API answers.
type switchAdmin struct {
	sw        *dispatch.Switch
	broadcast func(dispatch.SwitchState) error
}

func (a switchAdmin) PushSwitch() admin.SwitchState { return adminSwitchState(a.sw.State()) }

func (a switchAdmin) SetPushSwitch(enabled bool) (admin.SwitchState, error) {
	st, err := a.sw.Set(enabled)
	if err != nil {
		return admin.SwitchState{}, err
	}
	if a.broadcast != nil {
		if err := a.broadcast(st); err != nil {
			return adminSwitchState(st), fmt.Errorf("push switch stored here, not yet on every member: %w", err)
		}
	}
	return adminSwitchState(st), nil
}

func adminSwitchState(st dispatch.SwitchState) admin.SwitchState {
	return admin.SwitchState{Enabled: st.Enabled, Version: st.Version, Node: st.Node, Changed: st.Changed}
}

// switchAdmin is the node's push switch on its admin API.
func (n *node) switchAdmin() admin.PushSwitch {
	a := switchAdmin{sw: n.pushSwitch}
	if n.cluster != nil {
		a.broadcast = n.cluster.broadcastSwitch
	}
	return a
}

// broadcastSwitch sends the switch to every other member and waits for
// those alive: once the operator is answered every node holds it back
// (or lets it go). A member down now gets it when it joins again
// (sendAccounts).
func (cn *clusterNode) broadcastSwitch(st dispatch.SwitchState) error {
	if err := cn.c.Broadcast(context.Background(), dispatch.SwitchRecord(st))(); err != nil && !errors.Is(err, cluster.ErrDegraded) {
		return err
	}
	return nil
}

// ApplySwitch takes a member's push switch when it is newer than this
// node's. When it is older, that member missed a change made here (it was
// away, or both flipped it at once): it is sent this node's, so that
// whoever joins whom, the newest state ends up on every member.
func (cn *clusterNode) ApplySwitch(from string, r cluster.Record) (func() error, error) {
	st, err := dispatch.DecodeSwitchRecord(r)
	if err != nil {
		return nil, err
	}
	sw := cn.n.pushSwitch
	newer, err := sw.Apply(st, from)
	if err != nil || newer {
		return nil, err
	}
	if mine := sw.State(); mine.Version != st.Version || mine.Node != st.Node {
		cn.spawn(func() {
			// Records may come from inside cluster.New, before cn.c is set.
			if !cn.awaitJoined() {
				return
			}
			if err := cn.c.Send(context.Background(), from, dispatch.SwitchRecord(mine))(); err != nil {
				cn.log.Warn("cluster: push switch not sent back to a member with an older one", "node", from, "err", err)
			}
		})
	}
	return nil, nil
}

// switchRecords is what a joining member gets of the switch: nothing
// while it was never set (every node starts enabled).
func (cn *clusterNode) switchRecords() []cluster.Record {
	if st := cn.n.pushSwitch.State(); st.Version > 0 {
		return []cluster.Record{dispatch.SwitchRecord(st)}
	}
	return nil
}

const pushSwitchUsage = `usage: pushd push disable|enable|status [--config FILE] [--json]
disable stops every push (messages, calls) on every node of the cluster at
once; registrations are kept and messages still queue. enable lets pushes
go again: nothing held back is sent late, the next message to a waiting
device pushes it. status shows the switch. Through the running node's
admin API; with no node running, the data directory is changed directly
and the cluster learns it when the node joins.`

// cmdPushSwitch is `pushd push disable|enable|status`.
func cmdPushSwitch(verb string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("push "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (TOML)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(stderr, pushSwitchUsage)
		return flag.ErrHelp
	}
	cfg, log, err := pushCommandConfig(*configPath, stderr)
	if err != nil {
		return err
	}
	sw, done, err := pushSwitchAt(cfg, log)
	if err != nil {
		return err
	}
	defer done()
	var st admin.SwitchState
	switch verb {
	case "status":
		st = sw.PushSwitch()
	default:
		if st, err = sw.SetPushSwitch(verb == "enable"); err != nil {
			return err
		}
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(st)
	}
	state := "enabled"
	if !st.Enabled {
		state = "disabled"
	}
	line := "push " + state
	if st.Version > 0 {
		line += fmt.Sprintf(" (version %d", st.Version)
		if st.Node != "" {
			line += " by " + st.Node
		}
		line += " at " + st.Changed.UTC().Format(time.RFC3339) + ")"
	}
	_, err = fmt.Fprintln(stdout, line)
	return err
}

// pushSwitchAt is the running node's switch through its admin API, else
// the one stored in the data directory.
func pushSwitchAt(cfg componentFileConfig, log *slog.Logger) (admin.PushSwitch, func(), error) {
	if cfg.Admin.Listen != "" {
		if tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.token")); err == nil {
			c := &admin.Client{Addr: cfg.Admin.Listen, Token: strings.TrimSpace(string(tok))}
			st, err := c.PushSwitch()
			if err == nil {
				return clientSwitch{c, st}, func() {}, nil
			}
			if !errors.Is(err, admin.ErrNoNode) {
				return nil, nil, err
			}
		}
	}
	db, err := openDataDir(cfg.DataDir, cfg.Domain)
	if err != nil {
		return nil, nil, err
	}
	sw, err := dispatch.OpenSwitch(db.Badger(), dispatch.SwitchConfig{Logger: log})
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return switchAdmin{sw: sw}, func() { _ = db.Close() }, nil
}

// clientSwitch is admin.Client as an admin.PushSwitch; its status is the
// one pushSwitchAt read to find the node.
type clientSwitch struct {
	c  *admin.Client
	st admin.SwitchState
}

func (s clientSwitch) PushSwitch() admin.SwitchState { return s.st }

func (s clientSwitch) SetPushSwitch(enabled bool) (admin.SwitchState, error) {
	return s.c.SetPushSwitch(enabled)
}
