package jsm

import (
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
)

// H3/H4: a backup that becomes primary adopts a suspended device: new
// messages queue and push from here, and the client resumes its replicated
// XEP-0198 stream here and gets the queue from the first entry.
func TestAdoptResumable(t *testing.T) {
	alice, bob := jid.MustParse("alice@localhost"), jid.MustParse("bob@localhost")
	m := New(DefaultConfig(), State{Users: []jid.JID{alice, bob}})
	now := time.Unix(1_700_000_000, 0)
	m.Step(now, ComponentUp{Domain: "push.localhost"})
	reg := Registration{AppServer: jid.MustParse("push.localhost"), Node: "n1"}
	m.Step(now, Adopt{
		Queues:        map[string]QueueInfo{"alice@localhost/phone": {First: 4, Last: 6, Count: 3, Bytes: 300}},
		Registrations: map[string][]Registration{"alice@localhost/phone": {reg}},
		Streams:       map[string]StreamID{"alice@localhost/phone": 77},
	})
	d := m.Devices(alice)
	if len(d) != 1 || !d[0].Detached || !d[0].Suspended || d[0].Stream != 77 {
		t.Fatalf("adopted device: %+v", d)
	}
	m.Step(now, Bound{Stream: 1, JID: jid.MustParse("bob@localhost/desk")})
	msg := stanza.New(stanza.NSClient, "message", "to", "alice@localhost/phone", "type", "chat", "from", "bob@localhost/desk").
		Add(stanza.New(stanza.NSClient, "body").AddText("after failover"))
	var enq, pub bool
	for _, a := range m.Step(now, StanzaIn{Stream: 1, Stanza: msg}) {
		switch a := a.(type) {
		case Enqueue:
			enq = a.Device == "alice@localhost/phone" && a.Entries[0].Seq == 7
		case Publish:
			pub = a.Device == "alice@localhost/phone"
		}
	}
	if !enq || !pub {
		t.Fatalf("message to the adopted device: enqueued=%v published=%v", enq, pub)
	}
	// The client resumes having acknowledged nothing of the queue.
	var from uint64
	for _, a := range m.Step(now.Add(time.Second), Resumed{Stream: 77, AckedSeq: 3}) {
		if f, ok := a.(Flush); ok && f.Stream == 77 {
			from = f.From
		}
	}
	if from != 4 {
		t.Fatalf("flush from %d, want 4", from)
	}
}
