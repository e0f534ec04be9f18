package router

import (
	"context"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
	"pushd/jsm"
)

// jsm's timers are kept when they fall due, not at the next tick: the
// tick loop wakes for the earliest deadline a step armed (a coalescing
// window's end, an adopted device's first push, here an expiry, M10).
// With an hour between ticks, a hibernation of 50 ms still ends.
func TestTimersFireBeforeTheTick(t *testing.T) {
	alice := jid.MustParse("alice@localhost")
	jcfg := jsm.DefaultConfig()
	jcfg.ResumeTimeout = 50 * time.Millisecond
	machine := jsm.New(jcfg, jsm.State{Users: []jid.JID{alice}})
	q := &gatedQueue{gate: make(chan struct{}), q: map[string][]jsm.Entry{}}
	close(q.gate)
	cfg := DefaultConfig()
	cfg.C2SListen, cfg.ComponentListen = "127.0.0.1:0", ""
	cfg.RequireTLS, cfg.AllowPlainWithoutTLS = false, true
	cfg.TickInterval = time.Hour
	srv, err := New(cfg, machine, Stores{Accounts: onePassword{}, Queue: q, Rosters: noRosters{}, PushRegistrations: noRegs{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	a := xmpptest.Dial(t, srv.Addr("c2s"), "localhost")
	if cond := a.AuthPlain("alice", "pw"); cond != "" {
		t.Fatal(cond)
	}
	a.Bind("phone")
	a.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	a.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	_ = a.Conn.Close()
	waitUntil(t, "alice's phone hibernating", func() bool { d := srv.Devices(alice); return len(d) == 1 && d[0].Detached })
	waitUntil(t, "her hibernation to end (M10) long before the next tick", func() bool { return len(srv.Devices(alice)) == 0 })
}
