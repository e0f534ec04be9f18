package sip

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"pushd/component/dispatch"
)

// O2 for calls: with the push switch off, the dispatcher sends no call
// push and tells the call it failed, so the caller gets 480 at once
// rather than after 13 s (C4), and the phone's binding keeps its push
// parameters: "disabled" is not a dead token.
func TestCallWithPushSwitchOff(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	sw, err := dispatch.OpenSwitch(db, dispatch.SwitchConfig{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.Set(false); err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int32
	dcfg := dispatch.DefaultConfig()
	dcfg.Logger = quiet
	d, err := dispatch.New(dcfg, dispatch.Deps{DB: db, Switch: sw,
		Providers: map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: countingProvider{&sent}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })

	w := startWorldPushing(t, func(c *Config) { c.Trusted = loopback() }, d)
	d.Route(dispatch.OwnerSIP, w.srv)
	w.bind(t, "alice", "sip:alice@127.0.0.1:9", &PushParams{Provider: dispatch.APNS,
		PRID: strings.Repeat("ab", 32), Param: "TEAM1234.com.example.app.voip"})
	caller := dialPeer(t, "udp", w.addr())
	inv := caller.invite("alice")
	caller.send(inv.String())
	id := inv.get("Call-ID")
	a := answers{}
	caller.collect(a, 5*time.Second, func() bool { return a.final(id) != 0 })
	if a.final(id) != 480 || a.has(id, 180) {
		t.Fatalf("call with pushes off heard %v, want 480 at once (the SIP clock did not move)", a[id])
	}
	if n := sent.Load(); n != 0 {
		t.Fatalf("%d pushes reached the provider with the switch off", n)
	}
	bs := w.reg.Bindings(aorOf("alice", testDomain), w.clock.Now())
	if len(bs) != 1 || bs[0].Push == nil {
		t.Fatalf("alice's bindings after the call: %+v, want hers with its push parameters", bs)
	}
}

// countingProvider counts attempts and delivers them.
type countingProvider struct{ n *atomic.Int32 }

func (p countingProvider) Send(context.Context, dispatch.Push) dispatch.Outcome {
	p.n.Add(1)
	return dispatch.Outcome{Result: dispatch.Delivered, Status: 200}
}

func (countingProvider) Reset() {}
