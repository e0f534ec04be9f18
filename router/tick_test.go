package router

import (
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
	srv := testRouter(t, func(cfg *Config) { cfg.TickInterval = time.Hour }, jcfg)

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
