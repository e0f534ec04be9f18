package jsm

import (
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
)

// H1: with Config.Remote, what jsm sends a user another node serves leaves
// as a Forward action (a presence broadcast to a contact), and a probe of
// such a contact is a real probe instead of an answer from local state.
func TestRemoteContactsGetForwards(t *testing.T) {
	alice, bob := jid.MustParse("alice@localhost"), jid.MustParse("bob@localhost")
	cfg := DefaultConfig()
	cfg.Remote = func(user string) bool { return user == bob.String() }
	m := New(cfg, State{Users: []jid.JID{alice, bob}, Rosters: map[string][]RosterItem{
		alice.String(): {{JID: bob, Subscription: SubBoth}},
	}})
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	phone, _ := alice.WithResource("phone")
	m.Step(now, Bound{Stream: 1, JID: phone})
	// The router stamps from on what a client sends.
	acts := m.Step(now, StanzaIn{Stream: 1, Stanza: stanza.New(stanza.NSClient, "presence", "from", phone.String())})
	var broadcast, probe bool
	for _, a := range acts {
		f, ok := a.(Forward)
		if !ok || f.Stanza.Get("to") != bob.String() {
			continue
		}
		switch f.Stanza.Get("type") {
		case "":
			broadcast = f.Stanza.Get("from") == phone.String()
		case "probe":
			probe = f.Stanza.Get("from") == alice.String()
		}
	}
	if !broadcast || !probe {
		t.Fatalf("initial presence: broadcast forwarded %v, probe forwarded %v; actions %v", broadcast, probe, acts)
	}

	// Without Remote, bob is local: no Forward at all.
	m = New(DefaultConfig(), State{Users: []jid.JID{alice, bob}, Rosters: map[string][]RosterItem{
		alice.String(): {{JID: bob, Subscription: SubBoth}},
	}})
	m.Step(now, Bound{Stream: 1, JID: phone})
	for _, a := range m.Step(now, StanzaIn{Stream: 1, Stanza: stanza.New(stanza.NSClient, "presence", "from", phone.String())}) {
		if _, ok := a.(Forward); ok {
			t.Fatalf("Forward on a lone node: %v", a)
		}
	}
}

// A contact of another domain is no other node's user: with no s2s, the
// probe at login is not sent anywhere, so the user gets no error back for
// it (the cluster's placement would name a node for any bare JID).
func TestRemoteIgnoresOtherDomains(t *testing.T) {
	alice, carol := jid.MustParse("alice@localhost"), jid.MustParse("carol@other.example")
	cfg := DefaultConfig()
	cfg.Remote = func(string) bool { return true }
	m := New(cfg, State{Users: []jid.JID{alice}, Rosters: map[string][]RosterItem{
		alice.String(): {{JID: carol, Subscription: SubBoth}},
	}})
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	phone, _ := alice.WithResource("phone")
	m.Step(now, Bound{Stream: 1, JID: phone})
	for _, a := range m.Step(now, StanzaIn{Stream: 1, Stanza: stanza.New(stanza.NSClient, "presence", "from", phone.String())}) {
		switch a := a.(type) {
		case Forward:
			t.Errorf("forwarded to another domain's contact: %s", stanza.Marshal(a.Stanza, ""))
		case Deliver:
			if a.Entry.Stanza.Get("type") == "error" {
				t.Errorf("an error for the login's probe: %s", stanza.Marshal(a.Entry.Stanza, ""))
			}
		}
	}
}

// A message to a user another node serves leaves as a Forward, and the
// sender's other carbons-enabled devices get their sent copy here (M6,
// XEP-0280): the recipient's node cannot make it.
func TestRemoteMessageForwardedWithCarbon(t *testing.T) {
	alice, bob := jid.MustParse("alice@localhost"), jid.MustParse("bob@localhost")
	cfg := DefaultConfig()
	cfg.Remote = func(user string) bool { return user == bob.String() }
	m := New(cfg, State{Users: []jid.JID{alice, bob}})
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	phone, _ := alice.WithResource("phone")
	desk, _ := alice.WithResource("desk")
	m.Step(now, Bound{Stream: 1, JID: phone})
	m.Step(now, Bound{Stream: 2, JID: desk})
	enable := stanza.New(stanza.NSClient, "iq", "type", "set", "id", "c1", "from", desk.String())
	enable.Add(stanza.New(stanza.NSCarbons, "enable"))
	m.Step(now, StanzaIn{Stream: 2, Stanza: enable})

	msg := stanza.New(stanza.NSClient, "message", "type", "chat", "from", phone.String(), "to", bob.String())
	msg.Add(stanza.New(stanza.NSClient, "body").AddText("hi"))
	var forwarded, carbon bool
	for _, a := range m.Step(now, StanzaIn{Stream: 1, Stanza: msg}) {
		switch a := a.(type) {
		case Forward:
			forwarded = a.Stanza.Get("to") == bob.String()
		case Deliver:
			carbon = carbon || (a.Stream == 2 && a.Entry.Stanza.Child(stanza.NSCarbons, "sent") != nil)
		case Enqueue, StoreOffline:
			t.Errorf("a message for another node's user kept here: %T", a)
		}
	}
	if !forwarded || !carbon {
		t.Fatalf("forwarded %v, sent carbon to the desk %v", forwarded, carbon)
	}
}
