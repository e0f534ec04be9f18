package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"pushd/component"
	"pushd/component/dispatch"
	"pushd/component/payload"
	"pushd/internal/apnstest"
	"pushd/internal/fcmtest"
	"pushd/internal/peertest"
)

// sipClock is the SIP side's clock in these tests: the call timers (5 s,
// 13 s) move when the test says, so nothing sleeps for them.
type sipClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *sipClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *sipClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// sipWorld is a node with SIP on a free port, APNS through the test
// server (and FCM through its test server when asked), a fake SIP clock,
// and alice (the callee, with a phone) and bob (the caller).
type sipWorld struct {
	n     *testNode
	apns  *apnstest.Server
	fcm   *fcmtest.Server // nil without sipWorldOptions.FCM
	clock *sipClock
	logs  *syncBuffer
	key   [payload.KeySize]byte
	// fcmKey is the key of alice's Android phone (FCM).
	fcmKey [payload.KeySize]byte
}

// sipWorldOptions change a sipWorld's node.
type sipWorldOptions struct {
	// FCM adds [fcm] through the FCM test server and a service-account
	// file, and alice's Android phone registered for push over XMPP with
	// the token sipFCMToken and fcmKey.
	FCM bool
	// DigestAlgorithms replaces the order sipp needs (MD5 first).
	DigestAlgorithms []string
	// Trusted is [sip] trusted: the proxies whose INVITEs need no digest.
	Trusted []string
	// Region and LegacySingleChannel go with the phone's XMPP push
	// registration (C7).
	Region              string
	LegacySingleChannel bool
}

const (
	sipPhonePRID = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
	sipPNParam   = "ABCD1234.com.example.pushd.voip"
)

func startSIPWorld(t *testing.T) *sipWorld {
	t.Helper()
	return startSIPWorldWith(t, sipWorldOptions{})
}

func startSIPWorldWith(t *testing.T, o sipWorldOptions) *sipWorld {
	t.Helper()
	peertest.RequirePeer(t, peertest.PeerSIPp)
	srv, withAPNS := apnsTestServer(t)
	w := &sipWorld{apns: srv, clock: &sipClock{now: time.Unix(1_800_000_000, 0)}, logs: &syncBuffer{}}
	withFCM := func(*fileConfig) {}
	if o.FCM {
		w.fcm, withFCM = fcmTestServer(t)
	}
	w.n = startTestNodeLogging(t, w.logs, func(c *fileConfig) {
		withAPNS(c)
		withFCM(c)
		c.SIP.Listen = peertest.Loopback(peertest.FreeUDPPort(t))
		c.sipClock = w.clock.Now
		// sipp 3.6 answers the first challenge only, and only MD5.
		c.SIP.DigestAlgorithms = []string{"MD5", "SHA-256"}
		if o.DigestAlgorithms != nil {
			c.SIP.DigestAlgorithms = o.DigestAlgorithms
		}
		c.SIP.Trusted = o.Trusted
	})
	w.n.addUser("alice", alicePW)
	w.n.addUser("bob", bobPW)
	// The phone's app registered for push over XMPP with its key; the SIP
	// binding's pn-prid is the same VoIP token, which is how the call push
	// finds the key (C2, S2).
	w.key[0], w.key[31] = 0x5a, 0xa5
	voip := sipPhonePRID
	if _, _, err := w.n.push.registry.Register(component.RegisterRequest{Account: "alice@localhost", DeviceID: "phone-1",
		Provider: dispatch.APNS, Token: tokAlice, VoIPToken: &voip, Key: &w.key,
		Region: o.Region, LegacySingleChannel: o.LegacySingleChannel}); err != nil {
		t.Fatal(err)
	}
	if o.FCM {
		// Her Android phone did the same with its FCM token.
		w.fcmKey[0], w.fcmKey[31] = 0xf0, 0x0f
		if _, _, err := w.n.push.registry.Register(component.RegisterRequest{Account: "alice@localhost", DeviceID: "android-1",
			Provider: dispatch.FCM, Token: sipFCMToken, Key: &w.fcmKey}); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

func (w *sipWorld) sip() string { return w.n.sip.Addr("udp") }

// register runs one REGISTER of alice's phone, whose calls go to phonePort.
func (w *sipWorld) register(t *testing.T, phonePort int, pn, cparams string) *peertest.SIPp {
	t.Helper()
	r := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "register.xml", Target: w.sip(),
		User: "alice", Password: alicePW, AuthURI: "localhost", Keys: map[string]string{
			"user": "alice", "domain": "localhost", "contact": peertest.Loopback(phonePort),
			"pn": pn, "cparams": cparams, "expires": "600"}})
	if err := r.Wait(20 * time.Second); err != nil {
		t.Fatalf("REGISTER: %v\n%s", err, r.Output())
	}
	return r
}

// tick moves the SIP clock and has the node's SIP side look at it.
func (w *sipWorld) tick(d time.Duration) {
	w.clock.advance(d)
	w.n.sip.Tick()
}

// callPush waits for the next push to the phone's VoIP token and opens it.
func (w *sipWorld) callPush(t *testing.T, n int) (apnstest.Request, payload.Payload) {
	t.Helper()
	reqs := w.apns.WaitRequests(n, 10*time.Second)
	if len(reqs) < n {
		t.Fatalf("%d pushes, want %d", len(reqs), n)
	}
	r := reqs[n-1]
	return r, openAPNSPush(t, w.key, r.Body)
}

// openAPNSPush opens the sealed payload of an APNS request body.
func openAPNSPush(t *testing.T, key [payload.KeySize]byte, body []byte) payload.Payload {
	t.Helper()
	var b struct {
		Enc string `json:"enc"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	p, err := payload.Open(key, b.Enc)
	if err != nil {
		t.Fatalf("push does not open with the device key: %v", err)
	}
	return p
}

// waitAnswered waits for a caller and a phone scenario to end well and
// checks that the phone's INVITE is the pushed call.
func waitAnswered(t *testing.T, caller, phone *peertest.SIPp, callID string) {
	t.Helper()
	if err := caller.Wait(30 * time.Second); err != nil {
		t.Fatalf("caller: %v\n%s", err, caller.Output())
	}
	if err := phone.Wait(10 * time.Second); err != nil {
		t.Fatalf("phone: %v\n%s", err, phone.Output())
	}
	if !strings.Contains(phone.Log(), callID) {
		t.Errorf("the phone's INVITE does not carry the pushed call id %q:\n%s", callID, phone.Log())
	}
}

// TestSIPCallPushAPNS is issue 12's main path with sipp as caller and
// phone (C1–C3): the phone registers with digest and RFC 8599
// parameters; bob's INVITE pushes it at once on the VoIP topic with the
// caller ID sealed under its key; pushd rings back at 5 s; the phone
// registers again, gets the INVITE, answers; ACK and BYE go through the
// dialog.
func TestSIPCallPushAPNS(t *testing.T) {
	w := startSIPWorld(t)
	phone := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "phone.xml", Timeout: 40 * time.Second})
	pn := ";pn-provider=apns;pn-prid=" + sipPhonePRID + ";pn-param=" + sipPNParam
	w.register(t, phone.Port, pn, `;+sip.instance="<urn:uuid:6c4f0a2e-1111-4d5e-9a1b-0123456789ab>"`)

	caller := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "caller.xml", Target: w.sip(),
		User: "bob", Password: bobPW, AuthURI: "alice@localhost", Keys: map[string]string{"user": "bob", "domain": "localhost", "callee": "alice"}})
	r, p := w.callPush(t, 1)
	if r.Token != sipPhonePRID || r.Topic != "com.example.pushd.voip" || r.PushType != "voip" {
		t.Fatalf("call push went to token %.8s… topic %q type %q", r.Token, r.Topic, r.PushType)
	}
	if p.Type != payload.TypeCall || p.Name != "Bob Builder" || p.From != "bob" || p.CallID == "" || p.Node != w.sip() {
		t.Fatalf("call payload %+v", p)
	}
	if strings.Contains(string(r.Body), "Bob Builder") {
		t.Fatal("the caller's name is in the push in clear")
	}
	// C3: nothing rings yet; at 5 s pushd rings back itself.
	w.tick(5 * time.Second)
	waitFor(t, "the caller hears ringing", 10*time.Second, func() bool { return strings.Contains(caller.Log(), "RINGING") })
	// The woken phone registers again: the held INVITE goes to it at once.
	w.register(t, phone.Port, pn, `;+sip.instance="<urn:uuid:6c4f0a2e-1111-4d5e-9a1b-0123456789ab>"`)
	waitAnswered(t, caller, phone, p.CallID)
	if n := len(w.apns.Requests()); n != 1 {
		t.Errorf("%d pushes for one answered call, want 1", n)
	}
	for _, secret := range []string{"Bob Builder", sipPhonePRID} {
		if strings.Contains(w.logs.String(), secret) {
			t.Errorf("the log has %q in clear", secret)
		}
	}
}

const phoneInstance = `;+sip.instance="<urn:uuid:6c4f0a2e-1111-4d5e-9a1b-0123456789ab>"`

func phonePN() string {
	return ";pn-provider=apns;pn-prid=" + sipPhonePRID + ";pn-param=" + sipPNParam
}

// pushTypes opens every push so far and returns their types in order.
func (w *sipWorld) pushTypes(t *testing.T) []payload.Type {
	t.Helper()
	var out []payload.Type
	for i := range w.apns.Requests() {
		_, p := w.callPush(t, i+1)
		out = append(out, p.Type)
	}
	return out
}

func (w *sipWorld) waitPushes(t *testing.T, want ...payload.Type) {
	t.Helper()
	w.apns.WaitRequests(len(want), 10*time.Second)
	got := w.pushTypes(t)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pushes %v, want %v", got, want)
	}
}

func (w *sipWorld) caller(t *testing.T, scenario string) *peertest.SIPp {
	return peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: scenario, Target: w.sip(),
		User: "bob", Password: bobPW, AuthURI: "alice@localhost", Keys: map[string]string{"user": "bob", "domain": "localhost", "callee": "alice"}})
}

// C7: an iPhone sold in China has no CallKit, and an iOS 12 app takes
// everything on one channel: the call that would go to the VoIP token
// goes to the app's message token instead, as an alert push to the bare
// bundle id, still the call (caller ID inside), and so does the missed
// call when nobody answers.
func TestSIPCallPushMessageChannel(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    sipWorldOptions
	}{
		{"region CN", sipWorldOptions{Region: "CN"}},
		{"single channel", sipWorldOptions{LegacySingleChannel: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := startSIPWorldWith(t, tc.o)
			phone := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "late_phone.xml", Timeout: 40 * time.Second})
			w.register(t, phone.Port, phonePN(), phoneInstance)
			c := w.caller(t, "caller_unanswered.xml")
			r, p := w.callPush(t, 1)
			if r.Token != tokAlice || r.Topic != "com.example.pushd" || r.PushType != "alert" {
				t.Fatalf("C7: call push went to token %.8s… topic %q type %q, want the message token, the bundle id, alert", r.Token, r.Topic, r.PushType)
			}
			if p.Type != payload.TypeCall || p.Name != "Bob Builder" || p.CallID == "" {
				t.Fatalf("C7: call payload %+v", p)
			}
			w.tick(5 * time.Second)
			w.tick(8 * time.Second)
			if err := c.Wait(20 * time.Second); err != nil {
				t.Fatalf("caller: %v\n%s", err, c.Output())
			}
			r, p = w.callPush(t, 2)
			if p.Type != payload.TypeMissedCall || r.Token != tokAlice || r.PushType != "alert" {
				t.Fatalf("C4/C7: after 480, push %q to token %.8s… type %q", p.Type, r.Token, r.PushType)
			}
		})
	}
}

// C4 and C5: a call nobody answers rings back at 5 s and ends at 13 s
// with 480 and a missed-call push; a caller who hangs up while it rings
// (CANCEL) leaves a missed-call push too. Each call pushes the phone
// once, and the phone registering after the call ended still gets its
// INVITE and an immediate CANCEL without a Reason (C8: missed).
func TestSIPUnansweredAndCancelled(t *testing.T) {
	w := startSIPWorld(t)
	late := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "late_phone.xml", Timeout: 40 * time.Second})
	w.register(t, late.Port, phonePN(), phoneInstance)

	c := w.caller(t, "caller_unanswered.xml")
	w.waitPushes(t, payload.TypeCall)
	w.tick(5 * time.Second)
	waitFor(t, "ringback", 10*time.Second, func() bool { return strings.Contains(c.Log(), "RINGING") })
	w.tick(8 * time.Second)
	if err := c.Wait(20 * time.Second); err != nil {
		t.Fatalf("caller: %v\n%s", err, c.Output())
	}
	if !strings.Contains(c.Log(), "UNAVAILABLE") {
		t.Fatalf("no 480:\n%s", c.Log())
	}
	w.waitPushes(t, payload.TypeCall, payload.TypeMissedCall)

	// The phone comes back 2 s after the call ended: INVITE, then CANCEL.
	w.tick(2 * time.Second)
	w.register(t, late.Port, phonePN(), phoneInstance)
	if err := late.Wait(20 * time.Second); err != nil {
		t.Fatalf("late phone: %v\n%s", err, late.Output())
	}
	if !strings.Contains(late.Log(), "CANCEL reason") || strings.Contains(late.Log(), "cause=") {
		t.Errorf("a missed call's late CANCEL has a Reason:\n%s", late.Log())
	}

	c = w.caller(t, "caller_cancel.xml")
	w.waitPushes(t, payload.TypeCall, payload.TypeMissedCall, payload.TypeCall)
	w.tick(5 * time.Second)
	if err := c.Wait(20 * time.Second); err != nil {
		t.Fatalf("cancelling caller: %v\n%s", err, c.Output())
	}
	w.waitPushes(t, payload.TypeCall, payload.TypeMissedCall, payload.TypeCall, payload.TypeMissedCall)
}

// C6 and C8: a shared line. Alice's desk phone (no push) answers at
// once; her sleeping phone, pushed with the call, gets an
// answered-elsewhere push, and when it registers it gets the call's
// INVITE and a CANCEL with Reason cause=200 to close its call screen.
func TestSIPSharedLineAnsweredElsewhere(t *testing.T) {
	w := startSIPWorld(t)
	desk := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "phone.xml", Timeout: 40 * time.Second})
	w.register(t, desk.Port, "", `;+sip.instance="<urn:uuid:00000000-2222-4d5e-9a1b-0123456789ab>"`)
	late := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "late_phone.xml", Timeout: 40 * time.Second})
	w.register(t, late.Port, phonePN(), phoneInstance)

	c := w.caller(t, "caller.xml")
	if err := c.Wait(20 * time.Second); err != nil {
		t.Fatalf("caller: %v\n%s", err, c.Output())
	}
	if err := desk.Wait(10 * time.Second); err != nil {
		t.Fatalf("desk: %v\n%s", err, desk.Output())
	}
	w.waitPushes(t, payload.TypeCall, payload.TypeAnsweredElsewhere)
	w.register(t, late.Port, phonePN(), phoneInstance)
	if err := late.Wait(20 * time.Second); err != nil {
		t.Fatalf("late phone: %v\n%s", err, late.Output())
	}
	if !strings.Contains(late.Log(), "cause=200") {
		t.Errorf("the late CANCEL does not say answered elsewhere:\n%s", late.Log())
	}
}

// C1, C8: RFC 8599's registrar answers: 555 for a provider pushd does
// not serve and for missing parameters (naming what it serves), the
// capability query, and +sip.pnsreg's refresh interval, whose refresh
// push comes when the binding nears its expiry.
func TestSIPRegisterPushParameters(t *testing.T) {
	w := startSIPWorld(t)
	refused := func(pn string) string {
		r := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "register_555.xml", Target: w.sip(),
			User: "alice", Password: alicePW, AuthURI: "localhost", Keys: map[string]string{
				"user": "alice", "domain": "localhost", "contact": "127.0.0.1:5999", "pn": pn, "cparams": "", "expires": "600"}})
		if err := r.Wait(20 * time.Second); err != nil {
			t.Fatalf("REGISTER %s: %v\n%s", pn, err, r.Output())
		}
		return r.Log()
	}
	for _, pn := range []string{";pn-provider=webpush;pn-prid=abc;pn-param=x", ";pn-provider=apns;pn-prid=abc", ";pn-provider=apns;pn-prid=abc;pn-param=nodots"} {
		if log := refused(pn); !strings.Contains(log, `+sip.pns="apns"`) {
			t.Errorf("555 for %s does not name apns:\n%s", pn, log)
		}
	}
	q := w.register(t, 5999, ";pn-provider", "")
	if !strings.Contains(q.Log(), `+sip.pns="apns"`) {
		t.Errorf("capability query not answered:\n%s", q.Log())
	}
	r := w.register(t, 5998, phonePN(), phoneInstance+";+sip.pnsreg")
	if !strings.Contains(r.Log(), `+sip.pnsreg="120"`) {
		t.Errorf("+sip.pnsreg not answered:\n%s", r.Log())
	}
	// 600 s registration: nothing at 479 s, a refresh push from 480 s.
	w.tick(479 * time.Second)
	w.tick(time.Second)
	reqs := w.apns.WaitRequests(1, 10*time.Second)
	if len(reqs) != 1 || reqs[0].PushType != "background" || reqs[0].Token != tokAlice {
		t.Fatalf("refresh push: %+v", reqs)
	}
	if _, p := w.callPush(t, 1); p.Type != payload.TypeRegRefresh || p.Node != w.sip() {
		t.Fatalf("refresh payload %+v", p)
	}
}
