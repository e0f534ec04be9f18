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
	m, now, reg := adoptingMachine()
	alice := jid.MustParse("alice@localhost")
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

// H3: what the failed primary queued after its last notification the app
// server took (it died inside the coalescing window) is pushed by the
// adopting node, together with what arrives in the moment after the
// takeover; a device whose queue was all pushed for is not pushed again.
// The adopted node's own publishes then report Pushed, for its backup.
func TestAdoptPushesUnpushed(t *testing.T) {
	m, now, reg := adoptingMachine()
	msg := func(body string) *stanza.Element {
		return stanza.New(stanza.NSClient, "message", "to", "alice@localhost/phone", "type", "chat", "from", "bob@localhost/desk").
			Add(stanza.New(stanza.NSClient, "body").AddText(body))
	}
	out := m.Step(now, Adopt{
		Queues: map[string]QueueInfo{
			"alice@localhost/phone": {First: 4, Last: 6, Count: 3, Bytes: 300},
			"bob@localhost/phone":   {First: 1, Last: 2, Count: 2, Bytes: 200},
		},
		Registrations: map[string][]Registration{"alice@localhost/phone": {reg}, "bob@localhost/phone": {reg}},
		Streams:       map[string]StreamID{"alice@localhost/phone": 77, "bob@localhost/phone": 78},
		// alice's #5 and #6 came after the last push; bob's were pushed.
		Unpushed: map[string][]Entry{"alice@localhost/phone": {{Seq: 5, Stanza: msg("five")}, {Seq: 6, Stanza: msg("six")}}},
	})
	publishes := func(out []Action) []Publish {
		var pubs []Publish
		for _, a := range out {
			if p, ok := a.(Publish); ok {
				pubs = append(pubs, p)
			}
		}
		return pubs
	}
	if pubs := publishes(out); len(pubs) != 0 {
		t.Fatalf("published at once: %+v; want to wait for the stanzas held during the takeover", pubs)
	}
	// A message held during the takeover arrives meanwhile: one push.
	m.Step(now, Bound{Stream: 1, JID: jid.MustParse("bob@localhost/desk")})
	m.Step(now.Add(100*time.Millisecond), StanzaIn{Stream: 1, Stanza: msg("held")})
	if pubs := publishes(m.Step(now.Add(adoptPushDelay-time.Millisecond), Tick{})); len(pubs) != 0 {
		t.Fatalf("published before the delay: %+v", pubs)
	}
	pubs := publishes(m.Step(now.Add(adoptPushDelay), Tick{}))
	if len(pubs) != 1 || pubs[0].Device != "alice@localhost/phone" || pubs[0].Summary.Count != 3 || pubs[0].Through != 7 {
		t.Fatalf("publishes after adoption: %+v, want one for alice counting 3 through #7", pubs)
	}
	res := stanza.New(stanza.NSClient, "iq", "type", "result", "id", pubs[0].Stanza.Get("id"), "from", "push.localhost", "to", "alice@localhost")
	var pushed []Pushed
	for _, a := range m.Step(now.Add(adoptPushDelay), ComponentIn{Domain: "push.localhost", Stanza: res}) {
		if p, ok := a.(Pushed); ok {
			pushed = append(pushed, p)
		}
	}
	if len(pushed) != 1 || pushed[0] != (Pushed{Stream: 77, Device: "alice@localhost/phone", Through: 7}) {
		t.Fatalf("after the app server's answer: %+v, want Pushed through #7 on stream 77", pushed)
	}
}

// adoptingMachine is a node about to adopt: alice and bob, its push
// component up, and a registration with it.
func adoptingMachine() (*Machine, time.Time, Registration) {
	m := New(DefaultConfig(), State{Users: []jid.JID{jid.MustParse("alice@localhost"), jid.MustParse("bob@localhost")}})
	now := time.Unix(1_700_000_000, 0)
	m.Step(now, ComponentUp{Domain: "push.localhost"})
	return m, now, Registration{AppServer: jid.MustParse("push.localhost"), Node: "n1"}
}

// H2/M10 after a takeover: the offline messages replicated here count as
// if stored here. A full store refuses more (resource-constraint, never a
// silent drop), and a login fetches what is there.
func TestAdoptOfflineCounts(t *testing.T) {
	m, now, _ := adoptingMachine()
	m.Step(now, Adopt{Offline: map[string]int{"alice@localhost": DefaultConfig().MaxOffline}})
	m.Step(now, Bound{Stream: 1, JID: jid.MustParse("bob@localhost/desk")})
	msg := stanza.New(stanza.NSClient, "message", "to", "alice@localhost", "type", "chat", "from", "bob@localhost/desk").
		Add(stanza.New(stanza.NSClient, "body").AddText("one too many"))
	var stored, bounced bool
	for _, a := range m.Step(now, StanzaIn{Stream: 1, Stanza: msg}) {
		switch a := a.(type) {
		case StoreOffline:
			stored = true
		case Deliver:
			bounced = a.Stream == 1 && a.Entry.Stanza.Get("type") == "error"
		}
	}
	if stored || !bounced {
		t.Fatalf("message to a full replicated offline store: stored %v, bounced %v", stored, bounced)
	}

	m, now, _ = adoptingMachine()
	m.Step(now, Adopt{Offline: map[string]int{"alice@localhost": 2}})
	m.Step(now, Bound{Stream: 2, JID: jid.MustParse("alice@localhost/phone")})
	var flush bool
	for _, a := range m.Step(now, StanzaIn{Stream: 2, Stanza: stanza.New(stanza.NSClient, "presence", "from", "alice@localhost/phone")}) {
		if f, ok := a.(FlushOffline); ok && f.Stream == 2 {
			flush = true
		}
	}
	if !flush {
		t.Fatal("login after a takeover does not fetch the replicated offline messages")
	}
}
