package sip

import (
	"strconv"
	"strings"
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

// callDeskPhone has bob call carol's desk phone (a live UDP binding)
// through pushd and returns the INVITE as the phone got it.
func callDeskPhone(t *testing.T) (w *world, phone, caller *peer, inv message, got *sip.Request) {
	t.Helper()
	w = startWorld(t, func(c *Config) { c.Trusted = loopback() })
	phone = dialPeer(t, "udp", w.addr())
	w.bind(t, "carol", "sip:carol@"+phone.local, nil)
	caller = dialPeer(t, "udp", w.addr())
	inv = caller.invite("carol")
	caller.send(inv.String())
	if got = phone.nextRequest(sip.INVITE, 2*time.Second); got == nil {
		t.Fatal("the phone got no INVITE")
	}
	return w, phone, caller, inv, got
}

// pushd's INVITE to a UDP phone leaves from its listening socket, the
// address the phone registered to and has a NAT pinhole for (C3), even
// when nothing came from the phone's address before. sipgo otherwise
// opens a socket per destination, whose reference count can go negative
// so that closing the server leaves it and its reader behind.
func TestUDPBranchFromListener(t *testing.T) {
	w, phone, caller, inv, got := callDeskPhone(t)
	if got.Source() != w.addr() {
		t.Errorf("INVITE from %s, want pushd's listener %s", got.Source(), w.addr())
	}
	phone.respond(t, got, 486, "Busy Here", nil)
	if res, _ := caller.final(t, inv.get("Call-ID"), 2*time.Second); res == nil || res.StatusCode != 486 {
		t.Fatalf("caller got %v, want the 486 relayed", res)
	}
}

// A call pushd proxies stays in its route (RFC 3261 §16.6 4, §16.12): the
// phone's INVITE carries pushd's Record-Route with lr and one hop less,
// the caller's 200 the same route; ACK and BYE sent to pushd's Route
// reach the phone with pushd's Route popped and its Via on top, and the
// BYE's 200 comes back.
func TestDialogLooseRouting(t *testing.T) {
	w, phone, caller, inv, got := callDeskPhone(t)
	rr := got.GetHeader("Record-Route")
	if rr == nil || rr.Value() != "<sip:"+w.addr()+";transport=udp;lr>" {
		t.Fatalf("Record-Route %v, want pushd's with lr", rr)
	}
	if mf := got.MaxForwards(); mf == nil || mf.Val() != 69 {
		t.Errorf("Max-Forwards %v, want 69", mf)
	}
	if vias := got.GetHeaders("Via"); len(vias) != 2 || !strings.Contains(vias[0].Value(), w.addr()) {
		t.Errorf("Via %v: want pushd's on top of the caller's", vias)
	}
	phone.respond(t, got, 200, "OK", func(res *sip.Response) {
		res.AppendHeader(sip.NewHeader("Contact", "<sip:carol@"+phone.local+">"))
	})
	ok, _ := caller.final(t, inv.get("Call-ID"), 2*time.Second)
	if ok == nil || ok.StatusCode != 200 {
		t.Fatalf("caller got %v, want the 200", ok)
	}
	if rr := ok.GetHeader("Record-Route"); rr == nil || !strings.Contains(rr.Value(), w.addr()) {
		t.Fatalf("the 200 has no Record-Route through pushd: %v", rr)
	}

	inDialog := func(method string, seq int) message {
		m := caller.request(method, "sip:carol@"+phone.local, inv.get("From"), ok.To().Value())
		return m.with("From", inv.get("From")).with("Call-ID", inv.get("Call-ID")).
			with("CSeq", strconv.Itoa(seq)+" "+method).with("Route", ok.GetHeader("Record-Route").Value())
	}
	caller.send(inDialog("ACK", 1).String())
	ack := phone.nextRequest(sip.ACK, 2*time.Second)
	if ack == nil {
		t.Fatal("the ACK did not reach the phone")
	}
	if ack.GetHeader("Route") != nil {
		t.Errorf("pushd left its Route on the ACK: %v", ack.GetHeader("Route"))
	}
	// Max-Forwards 0 is the one not forwarded (§16.3 3); 1 still is.
	if code := caller.expect(t, inDialog("INFO", 2).with("Max-Forwards", "0")); code != 483 {
		t.Errorf("INFO with Max-Forwards 0: %d, want 483", code)
	}
	bye := inDialog("BYE", 3).with("Max-Forwards", "1")
	caller.send(bye.String())
	got = phone.nextRequest(sip.BYE, 2*time.Second)
	if got == nil {
		t.Fatal("the BYE did not reach the phone")
	}
	if got.GetHeader("Route") != nil || !strings.Contains(got.Via().Value(), w.addr()) {
		t.Errorf("BYE at the phone: Route %v, top Via %v", got.GetHeader("Route"), got.Via())
	}
	phone.respond(t, got, 200, "OK", nil)
	if res, _ := caller.final(t, bye.get("Call-ID"), 2*time.Second); res == nil || res.StatusCode != 200 || res.CSeq().MethodName != sip.BYE {
		t.Fatalf("BYE answered %v, want its 200", res)
	}
}

// pushd is no open relay (S4): an in-dialog request that does not name
// it in a Route, names another host, or names it but belongs to no call
// it holds is 481; a new INVITE routed on to another host is 403, one
// with only pushd's Route (pushd as the phone's outbound proxy) a call
// like any other; a CANCEL that matches no INVITE is 481. Before, any
// request with pushd's Route went to its Request-URI, wherever that was,
// new INVITEs too and without a challenge.
func TestDialogRefusals(t *testing.T) {
	w := startWorld(t, func(c *Config) { c.Trusted = loopback() })
	p := dialPeer(t, "udp", w.addr())
	to := "<sip:carol@" + testDomain + ">;tag=abc"
	from := `"Bob" <sip:bob@` + testDomain + ">"
	bye := func() message { return p.request("BYE", "sip:carol@127.0.0.1:5999", from, to) }
	us := "<sip:" + w.addr() + ";lr>"
	for _, tc := range []struct {
		name string
		req  message
		want int
	}{
		{"BYE without Route", bye(), 481},
		{"BYE routed elsewhere", bye().with("Route", "<sip:192.0.2.1:5060;lr>"), 481},
		{"re-INVITE without Route", p.request("INVITE", "sip:carol@127.0.0.1:5999", from, to), 481},
		{"INVITE routed elsewhere", p.invite("carol").with("Route", "<sip:192.0.2.1:5060;lr>"), 403},
		{"CANCEL of nothing", p.request("CANCEL", "sip:carol@"+testDomain, from, "<sip:carol@"+testDomain+">"), 481},
		{"BYE through pushd for a call it does not hold", bye().with("Route", us), 481},
		{"INVITE routed through pushd and on elsewhere", p.invite("carol").with("Route", us).add("Route", "<sip:192.0.2.1:5060;lr>"), 403},
		{"INVITE with pushd as outbound proxy", p.invite("dave").with("Route", us), 480},
	} {
		if got := p.expect(t, tc.req); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// A Route names pushd by its advertised host and port, the port 5060 when
// left out (RFC 3261 §19.1.2). A port below 5060 was taken for 5060, so
// that on such a port pushd did not know its own Record-Route and
// answered the dialog's BYE 481.
func TestIsUs(t *testing.T) {
	for _, tc := range []struct {
		advertise string
		uri       sip.Uri
		want      bool
	}{
		{"192.0.2.10:5000", sip.Uri{Host: "192.0.2.10", Port: 5000}, true},
		{"192.0.2.10:5000", sip.Uri{Host: "192.0.2.10", Port: 5060}, false},
		{"192.0.2.10:5000", sip.Uri{Host: "192.0.2.10"}, false},
		{"192.0.2.10:5000", sip.Uri{Host: "192.0.2.11", Port: 5000}, false},
		{"192.0.2.10:5060", sip.Uri{Host: "192.0.2.10"}, true},
		{"192.0.2.10:5060", sip.Uri{Host: "192.0.2.10", Port: 5060}, true},
		{"192.0.2.10:5080", sip.Uri{Host: "192.0.2.10", Port: 5080}, true},
		{"sip.example.com:5060", sip.Uri{Host: "SIP.example.com"}, true},
	} {
		cfg := DefaultConfig()
		cfg.Domain, cfg.Advertise, cfg.Logger = testDomain, tc.advertise, discardLogger()
		s, err := New(cfg, Deps{Registrar: &Registrar{}, Accounts: testAccounts})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.isUs(tc.uri); got != tc.want {
			t.Errorf("advertised %s, Route %s: %v, want %v", tc.advertise, tc.uri.String(), got, tc.want)
		}
		s.Close()
	}
}
