package main

import (
	"strings"
	"testing"
	"time"

	"pushd/internal/peertest"
	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// Both SCRAM mechanisms work, and the server proves it knows the
// credentials (BEHAVIOUR S1); the mechanisms are not offered before TLS.
func TestSCRAMMechanisms(t *testing.T) {
	n := startTestNode(t, nil)
	n.addUser("sam", "pässword")
	for _, mech := range []string{"SCRAM-SHA-1", "SCRAM-SHA-256"} {
		t.Run(mech, func(t *testing.T) {
			c := xmpptest.Dial(t, n.c2s(), "localhost")
			if c.Features.Child(stanza.NSSASL, "mechanisms") != nil {
				t.Error("mechanisms offered before STARTTLS with require_tls")
			}
			c.StartTLS()
			if got := c.AuthSCRAM(mech, "sam", "wrong"); got != "not-authorized" {
				t.Errorf("wrong password: %q", got)
			}
			if got := c.AuthSCRAM(mech, "sam", "pässword"); got != "" {
				t.Fatalf("login: %q", got)
			}
			if jid := c.Bind("desk"); jid != "sam@localhost/desk" {
				t.Errorf("bound %q, want the requested resource", jid)
			}
		})
	}
}

// Direct TLS (XEP-0368) on its own listener, and the XEP-0198 <enabled/>
// carrying the resume location when one is configured and, as max, the
// push resume timeout (issue 11: a device may enable push after it).
func TestDirectTLSAndResumeLocation(t *testing.T) {
	n := startTestNode(t, func(c *fileConfig) {
		c.C2S.TLSListen = peertest.Loopback(peertest.FreePort(t))
		c.C2S.ResumeLocation = "xmpp.example.org:5222"
		c.C2S.PushResumeTimeout = duration(2 * time.Hour)
	})
	n.addUser("tess", "pw")
	c := xmpptest.DialTLS(t, n.router.Addr("tls"), "localhost")
	if c.Features.Child(stanza.NSTLS, "starttls") != nil {
		t.Error("STARTTLS offered on a direct TLS stream")
	}
	if got := c.AuthPlain("tess", "pw"); got != "" {
		t.Fatalf("login: %q", got)
	}
	c.Bind("phone")
	c.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	el := c.Expect("enabled", func(e *stanza.Element) bool { return e.Name.Space == stanza.NSSM })
	if !el.Is(stanza.NSSM, "enabled") || el.Get("resume") != "true" || el.Get("id") == "" {
		t.Fatalf("enable: %s", el)
	}
	if el.Get("location") != "xmpp.example.org:5222" || el.Get("max") != "7200" {
		t.Errorf("enabled location=%q max=%q", el.Get("location"), el.Get("max"))
	}
	// An unknown resumption id fails cleanly and the client may bind anew.
	d := xmpptest.DialTLS(t, n.router.Addr("tls"), "localhost")
	d.AuthPlain("tess", "pw")
	d.Send(`<resume xmlns='urn:xmpp:sm:3' h='0' previd='nope'/>`)
	if f := d.Expect("failed", func(e *stanza.Element) bool { return e.Name.Space == stanza.NSSM }); !f.Is(stanza.NSSM, "failed") {
		t.Fatalf("resume unknown id: %s", f)
	}
	if !strings.HasPrefix(d.Bind("laptop"), "tess@localhost/") {
		t.Error("bind after failed resume")
	}
}

// XEP-0352 state reaches the session manager.
func TestClientStateRecorded(t *testing.T) {
	n := startTestNode(t, nil)
	n.addUser("cleo", "pw")
	c := xmpptest.Login(t, n.c2s(), "localhost", "cleo", "pw", "phone")
	c.Send(`<inactive xmlns='urn:xmpp:csi:0'/><iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>`)
	c.Expect("ping", func(e *stanza.Element) bool { return e.Get("id") == "p1" })
	devs := n.devices(t, "cleo@localhost")
	if len(devs) != 1 || devs[0].Active {
		t.Fatalf("devices after <inactive/>: %+v", devs)
	}
}

// XEP-0198 counts every stanza the server writes, the answers to a legacy
// session request or a second bind after <enable/> too: otherwise the
// client's count runs ahead of the server's and its acknowledgement ends
// the stream (handled-count-too-high), or covers a stanza it never got.
func TestStreamAnswersCountedForSM(t *testing.T) {
	n := startTestNode(t, nil)
	n.addUser("sam", "pw")
	c := xmpptest.Login(t, n.c2s(), "localhost", "sam", "pw", "phone")
	c.Send(`<enable xmlns='urn:xmpp:sm:3'/>`)
	c.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	c.Send(`<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>` +
		`<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>again</resource></bind></iq>`)
	c.Expect("session answer", func(e *stanza.Element) bool { return e.Get("id") == "s1" })
	c.Expect("bind refused", func(e *stanza.Element) bool { return e.Get("id") == "b2" })
	c.Send(`<a xmlns='urn:xmpp:sm:3' h='2'/><r xmlns='urn:xmpp:sm:3'/>`)
	if el := c.Expect("ack", func(e *stanza.Element) bool { return e.Name.Space == stanza.NSSM || e.Name.Local == "error" }); !el.Is(stanza.NSSM, "a") || el.Get("h") != "2" {
		t.Fatalf("after acknowledging both answers: %s, want <a h='2'/>", stanza.Marshal(el, ""))
	}
}
