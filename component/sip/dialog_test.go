package sip

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// nextRequest returns the next request of method p hears within d.
func (p *peer) nextRequest(method sip.RequestMethod, d time.Duration) *sip.Request {
	deadline := time.Now().Add(d)
	for {
		m := p.next(time.Until(deadline))
		if m == nil {
			return nil
		}
		if req, ok := m.(*sip.Request); ok && req.Method == method {
			return req
		}
	}
}

// respond answers req from p with code; the To tag makes a dialog.
func (p *peer) respond(t *testing.T, req *sip.Request, code int, reason string, edit func(*sip.Response)) {
	t.Helper()
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if code > 100 {
		res.To().Params.Add("tag", "phone")
	}
	if edit != nil {
		edit(res)
	}
	p.send(res.String())
}

// pushd's INVITE to a UDP phone leaves from its listening socket, the
// address the phone registered to and has a NAT pinhole for (C3), even
// when nothing came from the phone's address before. sipgo otherwise
// opens a socket per destination, whose reference count can go negative
// so that closing the server leaves it and its reader behind.
func TestUDPBranchFromListener(t *testing.T) {
	w := startWorld(t, func(c *Config) { c.Trusted = loopback() })
	phone := dialPeer(t, "udp", w.addr())
	w.bind(t, "carol", "sip:carol@"+phone.local, nil)
	caller := dialPeer(t, "udp", w.addr())
	inv := caller.invite("carol")
	caller.send(inv.String())
	got := phone.nextRequest(sip.INVITE, 2*time.Second)
	if got == nil {
		t.Fatal("the phone got no INVITE")
	}
	if got.Source() != w.addr() {
		t.Errorf("INVITE from %s, want pushd's listener %s", got.Source(), w.addr())
	}
	phone.respond(t, got, 486, "Busy Here", nil)
	if res, _ := caller.final(t, inv.get("Call-ID"), 2*time.Second); res == nil || res.StatusCode != 486 {
		t.Fatalf("caller got %v, want the 486 relayed", res)
	}
}
