package main

import (
	"fmt"
	"strings"
	"testing"

	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// TestBadInput is BEHAVIOUR S4 at the c2s edge: each bad input gets the
// error RFC 6120 specifies, and two bystanders chatting on the same node
// notice nothing.
func TestBadInput(t *testing.T) {
	n := startTestNode(t, func(c *fileConfig) {
		c.C2S.MaxStanzaBytes = 64 << 10
		c.C2S.RateLimit, c.C2S.RateBurst = 50, 100
	})
	n.addUser("mallory", "mallory-pw")
	n.addUser("carol", "carol-pw")
	n.addUser("dave", "dave-pw")
	domain, addr := n.cfg.Domain, n.c2s()
	carol := xmpptest.Login(t, addr, domain, "carol", "carol-pw", "desk")
	dave := xmpptest.Login(t, addr, domain, "dave", "dave-pw", "desk")
	carol.Send(`<presence/>`)
	dave.Send(`<presence/>`)

	login := func(t *testing.T) *xmpptest.Client {
		return xmpptest.Login(t, addr, domain, "mallory", "mallory-pw", "bad")
	}
	authed := func(t *testing.T) *xmpptest.Client {
		c := xmpptest.Dial(t, addr, domain)
		c.StartTLS()
		if cond := c.AuthPlain("mallory", "mallory-pw"); cond != "" {
			t.Fatal(cond)
		}
		return c
	}
	big := strings.Repeat("x", 70<<10)
	tests := []struct {
		name string
		// run does the bad thing and returns the stream error seen.
		run  func(t *testing.T) string
		want string
	}{
		{"malformed XML", func(t *testing.T) string {
			c := login(t)
			c.Send(`<message to='carol@localhost'><body>hi</message>`)
			return c.StreamError()
		}, "not-well-formed"},
		{"entity declaration", func(t *testing.T) string {
			c := login(t)
			c.Send(`<!DOCTYPE lol [<!ENTITY lol "lol">]><message><body>&lol;</body></message>`)
			return c.StreamError()
		}, "restricted-xml"},
		{"entity declaration before the header", func(t *testing.T) string {
			c := rawDial(t, addr)
			c.Send(`<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a "b">]><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`)
			return c.StreamError()
		}, "restricted-xml"},
		{"oversized stanza", func(t *testing.T) string {
			c := login(t)
			c.Send(`<message to='carol@localhost'><body>` + big + `</body></message>`)
			return c.StreamError()
		}, "policy-violation"},
		{"deep nesting", func(t *testing.T) string {
			c := login(t)
			c.Send(`<message>` + strings.Repeat("<x>", 40) + strings.Repeat("</x>", 40) + `</message>`)
			return c.StreamError()
		}, "policy-violation"},
		{"unknown top-level element", func(t *testing.T) string {
			c := login(t)
			c.Send(`<foo xmlns='urn:example:foo'/>`)
			return c.StreamError()
		}, "unsupported-stanza-type"},
		{"stanza before authentication", func(t *testing.T) string {
			c := xmpptest.Dial(t, addr, domain)
			c.StartTLS()
			c.Send(`<message to='carol@localhost'><body>hi</body></message>`)
			return c.StreamError()
		}, "not-authorized"},
		{"stanza before bind", func(t *testing.T) string {
			c := authed(t)
			c.Send(`<message to='carol@localhost'><body>hi</body></message>`)
			return c.StreamError()
		}, "not-authorized"},
		{"wrong stream namespace", func(t *testing.T) string {
			c := rawDial(t, addr)
			c.Send(`<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`)
			return c.StreamError()
		}, "invalid-namespace"},
		{"unknown host", func(t *testing.T) string {
			c := rawDial(t, addr)
			c.Send(`<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>`)
			return c.StreamError()
		}, "host-unknown"},
		{"flood", func(t *testing.T) string {
			c := login(t)
			var b strings.Builder
			for i := 0; i < 500; i++ {
				fmt.Fprintf(&b, `<iq type='get' id='p%d'><ping xmlns='urn:xmpp:ping'/></iq>`, i)
			}
			_ = c.TrySend(b.String())
			return c.StreamError()
		}, "policy-violation"},
		{"bind conflict", func(t *testing.T) string {
			first := login(t)
			second := login(t) // same resource: the newer stream wins
			second.Send(`<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>`)
			second.Expect("ping result", func(e *stanza.Element) bool { return e.Get("id") == "ping1" && e.Get("type") == "result" })
			return first.StreamError()
		}, "conflict"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.run(t); got != tc.want {
				t.Errorf("stream error %q, want %q", got, tc.want)
			}
			body := fmt.Sprintf("still here %d", i)
			carol.Message("dave@localhost/desk", body)
			dave.ExpectBody(body)
		})
	}

	t.Run("SASL failures", func(t *testing.T) {
		c := xmpptest.Dial(t, addr, domain)
		// BEHAVIOUR S1: no authentication before TLS when TLS is required.
		if got := c.AuthPlain("mallory", "mallory-pw"); got != "encryption-required" {
			t.Errorf("auth before STARTTLS: %q, want encryption-required", got)
		}
		c.StartTLS()
		if got := c.AuthPlain("mallory", "wrong"); got != "not-authorized" {
			t.Errorf("wrong password: %q, want not-authorized", got)
		}
		if got := c.AuthPlain("nobody", "wrong"); got != "not-authorized" {
			t.Errorf("unknown user: %q, want not-authorized", got)
		}
		// The third failure ends the stream.
		c.Send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AG1hbGxvcnkAd3Jvbmc=</auth>`)
		c.Expect("failure", func(e *stanza.Element) bool { return e.Is(stanza.NSSASL, "failure") })
		if got := c.StreamError(); got != "policy-violation" {
			t.Errorf("after three failures: %q, want policy-violation", got)
		}
	})
}

// rawDial connects without sending a stream header.
func rawDial(t *testing.T, addr string) *rawClient {
	c := xmpptest.DialRaw(t, addr)
	return &rawClient{c}
}

type rawClient struct{ *xmpptest.Client }

// StreamError reads the server's header, then its stream error.
func (c *rawClient) StreamError() string {
	c.ReadHeaderOnly()
	return c.Client.StreamError()
}
