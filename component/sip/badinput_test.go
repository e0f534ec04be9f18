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
		{"Max-Forwards 0", func(p *peer) string { return p.invite("dave").with("Max-Forwards", "0").String() }, 483, 483},
		{"body over max_message_bytes", func(p *peer) string {
			m := p.invite("dave").with("Content-Type", "application/sdp")
			m.body = strings.Repeat("a=x\r\n", 1000)
			return m.String()
		}, 513, 513},
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
