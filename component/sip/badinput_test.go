package sip

import (
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// stillServes is the bystander of every bad-input case: a REGISTER from a
// fresh socket goes through its challenge to a 200.
func (w *world) stillServes(t *testing.T) {
	t.Helper()
	p := dialPeer(t, "udp", w.addr())
	contact := "<sip:carol@" + p.local + ">;+sip.instance=\"<urn:uuid:00000000-0000-4000-8000-00000000ca01>\""
	if res := p.registerAs(t, p.register("carol", contact), "carol", "carol-pw"); res.StatusCode != 200 {
		t.Fatalf("a bystander's REGISTER after it: %d %s", res.StatusCode, res.Reason)
	}
}

// isClosed reports whether p's connection is closed (by the server).
func (p *peer) isClosed() bool {
	select {
	case <-p.closed:
		return true
	default:
		return false
	}
}

const (
	noAnswer = 0  // nothing came back
	closed   = -1 // the server closed the connection
)

// S4 at the SIP edge, over UDP and TCP: each bad request gets the answer
// RFC 3261 gives it where it gives one (400 naming what is missing, 483,
// 513), is dropped where no answer can be made (no message, no Via) and
// on a stream closes the connection when no message boundary is left.
// After each, another source still registers; nothing panics, and the
// server leaves no goroutine behind (startWorld).
func TestBadInput(t *testing.T) {
	w := startWorld(t, func(c *Config) {
		c.Trusted = loopback()
		c.MaxMessageBytes = 4096
	})
	// A call held for a sleeping phone all along: the bad input must not
	// touch it (C3, C4).
	w.bind(t, "alice", "sip:alice@127.0.0.1:9", &PushParams{Provider: "apns", PRID: testPRID, Param: "TEAM1234.com.example.app.voip"})
	held := dialPeer(t, "udp", w.addr())
	heldCall := held.invite("alice")
	held.send(heldCall.String())
	w.pusher.wait(t, 1)

	pad := func(m message, n int, size int) message {
		for range n {
			m = m.add("X-Pad", strings.Repeat("p", size))
		}
		return m
	}
	type badCase struct {
		name     string
		req      func(p *peer) string
		udp, tcp int // the code, noAnswer or closed
	}
	cases := []badCase{
		{"garbage", func(*peer) string { return "\x00\xff\x13garbage \x7f\r\n\r\n" }, noAnswer, closed},
		{"not SIP", func(*peer) string { return "GET / HTTP/1.1\r\nHost: x\r\n\r\n" }, noAnswer, closed},
		{"truncated", func(p *peer) string { s := p.invite("dave").String(); return s[:len(s)/2] }, noAnswer, noAnswer},
		{"body shorter than Content-Length", func(p *peer) string {
			return p.invite("dave").with("Content-Length", "100").String() + "v=0\r\n"
		}, noAnswer, noAnswer},
		{"no Via", func(p *peer) string { return p.invite("dave").without("Via").String() }, 400, 400},
		{"no Call-ID", func(p *peer) string { return p.invite("dave").without("Call-ID").String() }, 400, 400},
		{"no From", func(p *peer) string { return p.invite("dave").without("From").String() }, 400, 400},
		{"no To", func(p *peer) string { return p.invite("dave").without("To").String() }, 400, 400},
		{"no CSeq", func(p *peer) string { return p.invite("dave").without("CSeq").String() }, 400, 400},
		{"CSeq method mismatch", func(p *peer) string { return p.invite("dave").with("CSeq", "1 BYE").String() }, 400, 400},
		{"REGISTER without To", func(p *peer) string {
			return p.register("alice", "<sip:alice@127.0.0.1:5070>").without("To").String()
		}, 400, 400},
		{"BYE without From", func(p *peer) string {
			return p.request("BYE", "sip:alice@127.0.0.1:5070", "<sip:bob@"+testDomain+">", "<sip:alice@"+testDomain+">;tag=x").without("From").String()
		}, 400, 400},
		{"ACK without Call-ID", func(p *peer) string {
			return p.request("ACK", "sip:alice@127.0.0.1:5070", "<sip:bob@"+testDomain+">", "<sip:alice@"+testDomain+">;tag=x").
				with("Route", "<sip:"+p.remote+";lr>").without("Call-ID").String()
		}, noAnswer, noAnswer},
		{"Max-Forwards 0", func(p *peer) string { return p.invite("dave").with("Max-Forwards", "0").String() }, 483, 483},
		{"body over max_message_bytes", func(p *peer) string {
			m := p.invite("dave").with("Content-Type", "application/sdp")
			m.body = strings.Repeat("a=x\r\n", 1000)
			return m.String()
		}, 513, 513},
		// sipgo reads 32 KiB of a datagram: the rest of one this size is
		// cut off, and what is left does not parse.
		{"60 KiB", func(p *peer) string {
			m := p.invite("dave").with("Content-Type", "application/sdp")
			m.body = strings.Repeat("a=x\r\n", 12000)
			return m.String()
		}, noAnswer, 513},
		{"headers over max_message_bytes", func(p *peer) string { return pad(p.invite("dave"), 50, 100).String() }, 513, 513},
		{"too many headers", func(p *peer) string { return pad(p.invite("dave"), 300, 1).String() }, 400, 400},
	}
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					want := tc.udp
					if network == "tcp" {
						want = tc.tcp
					}
					p := dialPeer(t, network, w.srv.Addr(network))
					p.send(tc.req(p))
					got := noAnswer
					m := p.next(300 * time.Millisecond)
					if m != nil {
						if res, ok := m.(*sip.Response); ok {
							got = int(res.StatusCode)
							if got >= 200 && res.CSeq() != nil && res.CSeq().MethodName == sip.INVITE && res.Via() != nil &&
								res.From() != nil && res.To() != nil && res.CallID() != nil {
								p.send(ackFor(res))
							}
						}
					} else if network == "tcp" && p.isClosed() {
						got = closed
					}
					if got != want {
						t.Logf("got %v", m)
						t.Errorf("answer %d, want %d (0: none, -1: connection closed)", got, want)
					}
					w.stillServes(t)
				})
			}
		})
	}

	// The held call went on as if nothing happened.
	a := answers{}
	w.tick(5 * time.Second)
	w.tick(8 * time.Second)
	held.collect(a, 3*time.Second, func() bool { return a.final(heldCall.get("Call-ID")) != 0 })
	if got := a[heldCall.get("Call-ID")]; !a.has(heldCall.get("Call-ID"), 180) || a.final(heldCall.get("Call-ID")) != 480 {
		t.Errorf("the held call heard %v, want 180 and 480", got)
	}
}

// S4, S5: bad digests at the registrar. Malformed credentials are 400; a
// replayed nonce count is stale (401 stale=true, not a failure); five
// wrong passwords are 403 each and then the source is paced: 403 with
// Retry-After even for the right one, until the block ends on the clock.
func TestBadDigest(t *testing.T) {
	w := startWorld(t, nil)
	p := dialPeer(t, "udp", w.addr())
	contact := "<sip:alice@" + p.local + ">"

	req := p.register("alice", contact)
	p.send(req.String())
	challenge, _ := p.final(t, req.get("Call-ID"), time.Second)
	if challenge == nil || challenge.StatusCode != 401 {
		t.Fatalf("REGISTER without credentials: %v", challenge)
	}
	for _, bad := range []string{`Digest username=`, `Digest username="alice", realm="` + testDomain + `"`, `Basic YWxpY2U6cGFzcw==`, "Digest " + strings.Repeat("x", 5000)} {
		m := authorize(t, req, challenge, "alice", "alice-pw").with("Authorization", bad)
		if code := p.expect(t, m); code != 400 {
			t.Errorf("Authorization %.30q: %d, want 400", bad, code)
		}
	}

	good := authorize(t, req, challenge, "alice", "alice-pw")
	if code := p.expect(t, good); code != 200 {
		t.Fatalf("right password: %d", code)
	}
	replay := authorize(t, good, challenge, "alice", "alice-pw").with("Authorization", good.get("Authorization"))
	p.send(replay.String())
	res, _ := p.final(t, replay.get("Call-ID"), time.Second)
	if res == nil || res.StatusCode != 401 || !strings.Contains(strings.Join(headerValues(res, "WWW-Authenticate"), " "), "stale=true") {
		t.Fatalf("replayed credentials: %v, want 401 stale=true", res)
	}

	for i := range 5 {
		m := authorize(t, p.register("alice", contact), challenge, "alice", "wrong")
		if code := p.expect(t, m); code != 403 {
			t.Fatalf("wrong password %d: %d, want 403", i, code)
		}
	}
	m := authorize(t, p.register("alice", contact), challenge, "alice", "alice-pw")
	p.send(m.String())
	res, _ = p.final(t, m.get("Call-ID"), time.Second)
	if res == nil || res.StatusCode != 403 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("right password after five wrong: %v, want 403 with Retry-After", res)
	}
	// Every peer here is 127.0.0.1, and the pace is by source address:
	// the block ends on the clock.
	w.clock.Advance(2 * time.Minute)
	w.stillServes(t)
}

// S4: an INVITE from outside [sip] trusted is challenged (407 with
// Proxy-Authenticate) and goes on once authenticated; a wrong password
// is 403.
func TestInviteNeedsAuth(t *testing.T) {
	w := startWorld(t, nil)
	p := dialPeer(t, "udp", w.addr())
	inv := p.invite("dave")
	p.send(inv.String())
	res, _ := p.final(t, inv.get("Call-ID"), time.Second)
	if res == nil || res.StatusCode != 407 || res.GetHeader("Proxy-Authenticate") == nil {
		t.Fatalf("INVITE without credentials: %v, want 407 with Proxy-Authenticate", res)
	}
	if code := p.expect(t, authorize(t, inv, res, "bob", "wrong")); code != 403 {
		t.Errorf("wrong password: %d, want 403", code)
	}
	if code := p.expect(t, authorize(t, inv, res, "bob", "bob-pw")); code != 480 {
		t.Errorf("authenticated INVITE for a user without bindings: %d, want 480", code)
	}
}

// S4: a flood from one source is 503 with Retry-After past its burst; a
// call held meanwhile is not harmed, and the source is served again once
// its bucket refills. (All peers are 127.0.0.1 here; that another source
// keeps its own bucket is TestSourceLimiter's.)
func TestFlood(t *testing.T) {
	w := startWorld(t, func(c *Config) {
		c.Trusted = loopback()
		c.RequestRate, c.RequestBurst = 10, 20
	})
	w.bind(t, "alice", "sip:alice@127.0.0.1:9", &PushParams{Provider: "apns", PRID: testPRID, Param: "TEAM1234.com.example.app.voip"})
	held := dialPeer(t, "udp", w.addr())
	heldCall := held.invite("alice")
	held.send(heldCall.String())
	w.pusher.wait(t, 1)

	for _, network := range []string{"udp", "tcp"} {
		p := dialPeer(t, network, w.srv.Addr(network))
		var ids []string
		for range 60 {
			m := p.request("OPTIONS", "sip:"+testDomain, "<sip:bob@"+testDomain+">", "<sip:"+testDomain+">")
			ids = append(ids, m.get("Call-ID"))
			p.send(m.String())
		}
		codes := map[int]int{}
		retryAfter := true
		for range ids {
			m := p.next(2 * time.Second)
			if m == nil {
				break
			}
			if res, ok := m.(*sip.Response); ok {
				codes[int(res.StatusCode)]++
				if res.StatusCode == 503 && res.GetHeader("Retry-After") == nil {
					retryAfter = false
				}
			}
		}
		if codes[200] > 20 || codes[503] < 35 || codes[200]+codes[503] != 60 || !retryAfter {
			t.Errorf("%s flood of 60: %v, want at most the burst of 20 served and the rest 503 with Retry-After", network, codes)
		}
		w.clock.Advance(10 * time.Second)
	}
	w.stillServes(t)

	a := answers{}
	w.tick(5 * time.Second)
	w.tick(8 * time.Second)
	id := heldCall.get("Call-ID")
	held.collect(a, 3*time.Second, func() bool { return a.final(id) != 0 })
	if !a.has(id, 180) || a.final(id) != 480 {
		t.Errorf("the held call heard %v, want 180 and 480", a[id])
	}
}
