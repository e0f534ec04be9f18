package main

import (
	"strings"
	"testing"
	"time"

	"pushd/component/payload"
	"pushd/internal/peertest"
)

// Issue 12 against real SIP peers from Debian: a user agent that is not
// sipp (baresip 1.0) as the phone, and Kamailio 5.6 as the proxy that
// routes its users' calls to pushd.

// TestSIPBaresipAnswers: baresip registers to pushd with digest (MD5, the
// only algorithm baresip 1.0 has) and no RFC 8599 parameters: a live,
// awake binding (C1). Bob's call forks to it at once, with no push (C2's
// live binding rings); baresip rings, is made to answer over ctrl_tcp,
// and the caller's ACK and BYE reach it through pushd's Record-Route.
func TestSIPBaresipAnswers(t *testing.T) {
	peertest.RequirePeer(t, peertest.PeerBaresip)
	w := startSIPWorldWith(t, sipWorldOptions{DigestAlgorithms: []string{"MD5"}})
	ua := peertest.StartBaresip(t, peertest.BaresipOptions{Registrar: w.sip(), User: "alice", Password: alicePW})
	bs := w.n.sipReg.Bindings("alice@localhost", w.clock.Now())
	if len(bs) != 1 || bs[0].Push != nil || !strings.Contains(bs[0].Contact, ua.SIPAddr) || bs[0].Transport != "udp" {
		t.Fatalf("bindings after baresip registered: %+v (want one live UDP binding at %s)", bs, ua.SIPAddr)
	}
	if got := bs[0].Expires.Sub(w.clock.Now()); got != 600*time.Second {
		t.Errorf("binding expires in %s, want the 600 s baresip asked for", got)
	}

	c := w.caller(t, "caller.xml")
	in := ua.WaitEvent(t, 10*time.Second, "CALL_INCOMING")
	if !strings.Contains(in.PeerURI, "bob") {
		t.Errorf("baresip's incoming call is from %q, want bob", in.PeerURI)
	}
	// Its 180 first: an answer sent at once could overtake the 180 in
	// pushd's relay, and the caller's scenario wants both.
	waitFor(t, "the caller hears baresip ring", 10*time.Second, func() bool { return strings.Contains(c.Log(), "RINGING") })
	ua.Command(t, "accept", "")
	// The called baresip reports the call established when the caller's
	// ACK has reached it, through pushd.
	ua.WaitEvent(t, 10*time.Second, "CALL_ESTABLISHED")
	if err := c.Wait(30 * time.Second); err != nil {
		t.Fatalf("caller: %v\n%s", err, c.Output())
	}
	// The caller's BYE went through pushd (its route) to baresip.
	ua.WaitEvent(t, 10*time.Second, "CALL_CLOSED")
	if n := len(w.apns.Requests()); n != 0 {
		t.Errorf("%d pushes for a call to a live binding without push parameters, want 0", n)
	}
}

// TestSIPKamailioUpstream: Kamailio routes a call for pushd's domain to
// pushd, record-routed; pushd trusts it ([sip] trusted), so the INVITE
// is not challenged. Alice's phone sleeps (a push binding): the call
// pushes it at once with the caller ID (C2), pushd's 180 at 5 s reaches
// the caller through Kamailio (C3), the phone registers again and gets
// the held INVITE, and 200, ACK and BYE go through both proxies. A
// second caller hangs up while it rings (C5).
func TestSIPKamailioUpstream(t *testing.T) {
	peertest.RequirePeer(t, peertest.PeerKamailio)
	w := startSIPWorldWith(t, sipWorldOptions{Trusted: []string{"127.0.0.1/32"}})
	k := peertest.StartKamailio(t, peertest.KamailioOptions{Defines: map[string]string{
		"PUSHD_DOMAIN": "localhost", "PUSHD": "sip:" + w.sip()}})
	phone := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "phone.xml", Timeout: 40 * time.Second})
	w.register(t, phone.Port, phonePN(), phoneInstance)

	c := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "caller_trunk.xml", Target: k.Addr,
		Keys: map[string]string{"user": "bob", "domain": "localhost", "callee": "alice"}})
	r, p := w.callPush(t, 1)
	if r.Token != sipPhonePRID || r.PushType != "voip" || p.Name != "Bob Builder" || p.From != "bob" || p.CallID == "" || p.Node != w.sip() {
		t.Fatalf("call push to %.8s… type %q, payload %+v", r.Token, r.PushType, p)
	}
	w.tick(5 * time.Second)
	waitFor(t, "the caller hears ringing through kamailio", 10*time.Second, func() bool { return strings.Contains(c.Log(), "RINGING") })
	w.register(t, phone.Port, phonePN(), phoneInstance)
	waitAnswered(t, c, phone, p.CallID)

	// The dialog's route is pushd then Kamailio as the phone's 200 lists
	// them, and Kamailio relayed the ACK and the BYE on to pushd.
	route := c.Log()
	if ours, theirs := strings.Index(route, "<sip:"+w.sip()+";"), strings.Index(route, "<sip:"+k.Addr+";"); ours < 0 || theirs < ours {
		t.Errorf("the dialog's Record-Route is not pushd (%s) then kamailio:\n%s", w.sip(), route)
	}
	for _, m := range []string{"INVITE", "ACK", "BYE"} {
		if !hasLine(k.Output(), "relay "+m+" ", "sip:"+w.sip()) {
			t.Errorf("kamailio did not relay the %s to pushd", m)
		}
	}
	if n := len(w.apns.Requests()); n != 1 {
		t.Errorf("%d pushes for one answered call, want 1", n)
	}

	// C5 through the proxy: the next caller hangs up while pushd rings
	// back; Kamailio relays the CANCEL, the caller gets 487, and the
	// phone, asleep again, a missed-call push.
	c = peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "caller_trunk_cancel.xml", Target: k.Addr,
		Keys: map[string]string{"user": "bob", "domain": "localhost", "callee": "alice"}})
	w.waitPushes(t, payload.TypeCall, payload.TypeCall)
	w.tick(5 * time.Second)
	if err := c.Wait(20 * time.Second); err != nil {
		t.Fatalf("cancelling caller: %v\n%s", err, c.Output())
	}
	if !strings.Contains(c.Log(), "TERMINATED") {
		t.Fatalf("no 487 for the cancelled call:\n%s", c.Log())
	}
	// Kamailio sends a CANCEL where its INVITE went (its transaction):
	// the 487 and the push say that was pushd.
	if !hasLine(k.Output(), "relay CANCEL ") {
		t.Error("kamailio did not relay the CANCEL")
	}
	w.waitPushes(t, payload.TypeCall, payload.TypeCall, payload.TypeMissedCall)
}

// hasLine reports whether a line of out holds every one of parts.
func hasLine(out string, parts ...string) bool {
	for line := range strings.Lines(out) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}
