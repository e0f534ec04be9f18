package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// H1 for presence: alice and bob live on different nodes. Their
// subscription requests and answers, their presence, and the away
// presence of alice's suspended phone (M4) reach each other through the
// nodes' session managers, which keep both rosters right.
func TestPresenceAcrossNodes(t *testing.T) {
	nodes := clusterOf(t, 2, nil)
	place := nodes[0].cluster.c.Placement()
	var alice, bob string
	for i := 0; alice == "" || bob == ""; i++ {
		u := "user" + strconv.Itoa(i)
		switch p := place.Primary(u + "@localhost"); {
		case p == "n1" && alice == "":
			alice = u
		case p == "n2" && bob == "":
			bob = u
		}
	}
	nodes[0].addUser(alice, "pw")
	nodes[0].addUser(bob, "pw")
	for _, n := range nodes {
		waitFor(t, "accounts on "+n.cluster.c.Name(), 10*time.Second, func() bool {
			l, _ := n.db.Accounts().List()
			return len(l) == 2
		})
	}
	aliceJID, bobJID := alice+"@localhost", bob+"@localhost"
	presence := func(from, typ string) func(*stanza.Element) bool {
		return func(e *stanza.Element) bool {
			return e.Is(stanza.NSClient, "presence") && strings.HasPrefix(e.Get("from"), from) && e.Get("type") == typ
		}
	}

	a := xmpptest.Login(t, nodes[0].c2s(), "localhost", alice, "pw", "phone")
	a.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/><presence/>`)
	a.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	b := xmpptest.Login(t, nodes[1].c2s(), "localhost", bob, "pw", "desk")
	b.Send(`<presence/>`)

	// alice asks bob; bob approves and asks back; alice approves.
	a.Send(`<presence type='subscribe' to='` + bobJID + `'/>`)
	b.Expect("alice's subscription request", presence(aliceJID, "subscribe"))
	b.Send(`<presence type='subscribed' to='` + aliceJID + `'/><presence type='subscribe' to='` + aliceJID + `'/>`)
	a.Expect("bob's approval", presence(bobJID, "subscribed"))
	a.Expect("bob's presence, sent on his approval", presence(bobJID+"/desk", ""))
	a.Expect("bob's subscription request", presence(bobJID, "subscribe"))
	a.Send(`<presence type='subscribed' to='` + bobJID + `'/>`)
	b.Expect("alice's presence, sent on her approval", presence(aliceJID+"/phone", ""))

	// Each roster says "both", on its own node.
	for _, c := range []struct {
		cl      *xmpptest.Client
		contact string
	}{{a, bobJID}, {b, aliceJID}} {
		c.cl.Send(`<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>`)
		res := c.cl.Expect("roster", func(e *stanza.Element) bool { return e.Get("id") == "roster" })
		var sub string
		if q := res.Child("jabber:iq:roster", "query"); q != nil {
			for _, it := range q.Elements() {
				if it.Get("jid") == c.contact {
					sub = it.Get("subscription")
				}
			}
		}
		if sub != "both" {
			t.Errorf("roster item %s: subscription %q, want both", c.contact, sub)
		}
	}

	// M6 across nodes: what alice's phone sends bob reaches him on his
	// node, and her desk gets the sent carbon (XEP-0280) from hers.
	d := xmpptest.Login(t, nodes[0].c2s(), "localhost", alice, "pw", "desk")
	d.Send(`<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>`)
	d.Expect("carbons enabled", func(e *stanza.Element) bool { return e.Get("id") == "carbons" && e.Get("type") == "result" })
	a.Send(`<message to='` + bobJID + `' type='chat'><body>across</body></message>`)
	isMsg := func(e *stanza.Element) bool { return e.Is(stanza.NSClient, "message") }
	if got := b.Expect("alice's message", isMsg).ChildText(stanza.NSClient, "body"); got != "across" {
		t.Errorf("bob got %q", got)
	}
	if el := d.Expect("the sent carbon", isMsg); el.Child(stanza.NSCarbons, "sent") == nil {
		t.Errorf("alice's desk got %s, want a sent carbon", stanza.Marshal(el, ""))
	}
	_ = d.Conn.Close()

	// M4 across nodes: alice's phone is suspended; bob sees her away.
	_ = a.Conn.Close()
	b.Expect("alice away", func(e *stanza.Element) bool {
		return presence(aliceJID, "")(e) && e.ChildText(stanza.NSClient, "show") == "away"
	})
	// A fresh login of bob's gets alice's presence by probe, from her node.
	b2 := xmpptest.Login(t, nodes[1].c2s(), "localhost", bob, "pw", "tablet")
	b2.Send(`<presence/>`)
	b2.Expect("alice's presence in answer to the probe", func(e *stanza.Element) bool {
		return presence(aliceJID, "")(e) && e.ChildText(stanza.NSClient, "show") == "away"
	})
}
