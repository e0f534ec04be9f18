package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"pushd/internal/peertest"
	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
	"pushd/jsm"
)

// M7: jsm hears a user is in a call when the first of their phones has a
// call up, and that it ended when the last one's ends.
func TestInCallsTransitions(t *testing.T) {
	var got []jsm.InCall
	c := newInCalls(func(e jsm.Event) { got = append(got, e.(jsm.InCall)) })
	c.changed("alice@localhost", "apns/a", true)
	c.changed("alice@localhost", "apns/b", true)
	c.changed("alice@localhost", "apns/a", false)
	if len(got) != 1 || !got[0].Active || got[0].User.String() != "alice@localhost" {
		t.Fatalf("after two up, one down: %+v", got)
	}
	c.changed("alice@localhost", "apns/b", false)
	c.changed("alice@localhost", "apns/b", false) // a stray down changes nothing
	if len(got) != 2 || got[1].Active {
		t.Fatalf("after both down: %+v", got)
	}
}

// M7 in a cluster: this node tells the others of its own changes only,
// and jsm hears the union of every node's calls, until the node that
// held a call is lost.
func TestInCallsUnion(t *testing.T) {
	var got []jsm.InCall
	var told []string
	c := newInCalls(func(e jsm.Event) { got = append(got, e.(jsm.InCall)) })
	c.tell = func(aor string, active bool) { told = append(told, fmt.Sprintf("%s %v", aor, active)) }
	c.remoteChanged("n2", "alice@localhost", true)
	c.changed("alice@localhost", "apns/a", true)
	c.remoteChanged("n2", "alice@localhost", false)
	if len(got) != 1 || !got[0].Active {
		t.Fatalf("a call at n2, one here, n2's ended: jsm heard %+v", got)
	}
	c.changed("alice@localhost", "apns/a", false)
	if len(got) != 2 || got[1].Active {
		t.Fatalf("after the last call ended: %+v", got)
	}
	if want := "[alice@localhost true alice@localhost false]"; fmt.Sprint(told) != want {
		t.Fatalf("told the others %v, want %s", told, want)
	}
	c.remoteChanged("n3", "bob@localhost", true)
	c.nodeLost("n3")
	if len(got) != 4 || got[2].User.String() != "bob@localhost" || !got[2].Active || got[3].Active {
		t.Fatalf("a call at a node that was lost: %+v", got)
	}
	if h := c.here(); len(h) != 0 {
		t.Fatalf("calls here: %v", h)
	}
}

// M7 across a cluster: alice's phone hibernates at her primary with push
// enabled and her desktop is active there, so a message does not push the
// phone (M6). Her call is set up through another node (where the INVITE
// and her SIP phone's binding are): while it is up, her primary pushes
// the phone for a message, though the desktop is active.
func TestInCallAcrossNodes(t *testing.T) {
	peertest.RequirePeer(t, peertest.PeerSIPp)
	fc := newFailoverCast(t, func(c *fileConfig) {
		c.SIP.Listen = peertest.Loopback(peertest.FreeUDPPort(t))
		c.SIP.DigestAlgorithms = []string{"MD5"} // sipp 3.6
		c.C2S.MobileResources = []string{"phone"}
	})
	P, X := fc.P, fc.bobHome
	appP := appAt(t, P)
	a, _ := fc.phone(t)
	fc.hibernate(t, a)
	desk := xmpptest.Login(t, P.c2s(), "localhost", "alice", alicePW, "desk")
	desk.Send(`<presence/>`)
	desk.Expect("her own presence", func(e *stanza.Element) bool { return e.Is(stanza.NSClient, "presence") })
	b := fc.desk(t)
	// To her phone: the desktop being active is what keeps it from
	// being pushed (M6), not where the message goes.
	message := func(body string) {
		t.Helper()
		b.Send(fmt.Sprintf(`<message to='%s/phone' type='chat'><body>%s</body></message><r xmlns='urn:xmpp:sm:3'/>`, fc.alice, body))
		b.Expect("ack of "+body, func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") })
	}
	message("before the call")
	if err := appP.ExpectNone(time.Second); err != nil {
		t.Fatalf("M6: the phone was pushed while the desktop is active and no call is up: %v", err)
	}

	sipAt := X.sip.Addr("udp")
	phone := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "phone.xml", Timeout: 40 * time.Second})
	reg := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "register.xml", Target: sipAt,
		User: "alice", Password: alicePW, AuthURI: "localhost", Keys: map[string]string{
			"user": "alice", "domain": "localhost", "contact": peertest.Loopback(phone.Port),
			"pn": "", "cparams": "", "expires": "600"}})
	if err := reg.Wait(20 * time.Second); err != nil {
		t.Fatalf("REGISTER: %v\n%s", err, reg.Output())
	}
	bobUser := strings.TrimSuffix(fc.bob, "@localhost")
	caller := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "caller_hold.xml", Target: sipAt, Timeout: 60 * time.Second,
		User: bobUser, Password: bobPW, AuthURI: "alice@localhost", Keys: map[string]string{"user": bobUser, "domain": "localhost", "callee": "alice"}})
	waitFor(t, "the call answered", 20*time.Second, func() bool { return strings.Contains(caller.Log(), "ANSWERED") })

	// The call is up at X; her primary hears it and pushes the phone.
	waitFor(t, "M7: the phone pushed during the call", 20*time.Second, func() bool {
		message("during the call")
		_, err := appP.Next(time.Second)
		return err == nil
	})
}
