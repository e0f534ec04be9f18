package jsm

import (
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
)

// BenchmarkStepMessage measures the hot path of M1: one chat message from
// one user's device to another user's bare JID, both available.
func BenchmarkStepMessage(b *testing.B) {
	alice, bob := jid.MustParse("alice@localhost"), jid.MustParse("bob@localhost")
	m := New(DefaultConfig(), State{Users: []jid.JID{alice, bob}})
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	m.Step(now, Bound{Stream: 1, JID: jid.MustParse("alice@localhost/laptop")})
	m.Step(now, Bound{Stream: 2, JID: jid.MustParse("bob@localhost/phone")})
	m.Step(now, StanzaIn{Stream: 1, Stanza: stanza.New(stanza.NSClient, "presence", "from", "alice@localhost/laptop")})
	m.Step(now, StanzaIn{Stream: 2, Stanza: stanza.New(stanza.NSClient, "presence", "from", "bob@localhost/phone")})
	msg := stanza.New(stanza.NSClient, "message", "from", "alice@localhost/laptop", "to", "bob@localhost", "type", "chat", "id", "x").
		Add(stanza.New(stanza.NSClient, "body").AddText("hello"))
	ev := StanzaIn{Stream: 1, Stanza: msg}
	b.ReportAllocs()
	for b.Loop() {
		out := m.Step(now, ev)
		if len(out) != 1 {
			b.Fatalf("got %d actions", len(out))
		}
	}
}

// BenchmarkStepSuspended measures M2+M3: one chat message to a user whose
// only device is detached with a push registration. Each Step queues it
// (Enqueue) and counts it for the notification; publishes are coalesced,
// so most Steps only queue. The queue is kept from growing past its
// bounds by an ack every 1000 messages, as a resuming client would.
func BenchmarkStepSuspended(b *testing.B) {
	alice, bob := jid.MustParse("alice@localhost"), jid.MustParse("bob@localhost")
	m := New(DefaultConfig(), State{Users: []jid.JID{alice, bob}})
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	m.Step(now, Bound{Stream: 1, JID: jid.MustParse("alice@localhost/laptop")})
	m.Step(now, Bound{Stream: 2, JID: jid.MustParse("bob@localhost/phone")})
	m.Step(now, StanzaIn{Stream: 2, Stanza: stanza.New(stanza.NSClient, "iq", "type", "set", "id", "e", "from", "bob@localhost/phone").
		Add(stanza.New(stanza.NSPush, "enable", "jid", "push.localhost", "node", "n1"))})
	m.Step(now, StanzaIn{Stream: 1, Stanza: stanza.New(stanza.NSClient, "presence", "from", "alice@localhost/laptop")})
	m.Step(now, StanzaIn{Stream: 2, Stanza: stanza.New(stanza.NSClient, "presence", "from", "bob@localhost/phone")})
	m.Step(now, Detached{Stream: 2})
	msg := stanza.New(stanza.NSClient, "message", "from", "alice@localhost/laptop", "to", "bob@localhost", "type", "chat", "id", "x").
		Add(stanza.New(stanza.NSClient, "body").AddText("hello"))
	ev := StanzaIn{Stream: 1, Stanza: msg, Size: 120}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		out := m.Step(now, ev)
		if len(out) == 0 {
			b.Fatal("no actions")
		}
		if n++; n%1000 == 0 {
			// Resume and detach again: the queue is flushed and trimmed.
			m.Step(now, Resumed{Stream: 2, AckedSeq: m.streams[2].seq})
			m.Step(now, Detached{Stream: 2})
			now = now.Add(time.Second)
		}
	}
}
