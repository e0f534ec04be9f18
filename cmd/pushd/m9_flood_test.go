package main

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// BEHAVIOUR M9 end to end: a flood at a suspended device meets the queue's
// bound with the specified behaviour, against a real node over real
// streams. The rules themselves are jsm's (jsm/testdata/m9_quota.txt);
// these tests show that router, queue and jsm together keep them: the
// oldest queued presence goes first, a message past the bound is bounced
// to its sender with resource-constraint (wait) and never dropped
// silently, the device gets exactly what was queued once it resumes, and
// the node's memory does not grow with the flood.

// smPeer is a raw client with XEP-0198 on that counts what it handles, so
// that it can acknowledge everything before it drops and resume with the
// right count.
type smPeer struct {
	t        testing.TB
	n        *testNode
	c        *xmpptest.Client
	user     string
	resource string
	id       string // XEP-0198 resumption id
	h        int    // stanzas handled since <enable/>
	pings    int
}

func loginSM(t testing.TB, n *testNode, user, resource string) *smPeer {
	t.Helper()
	p := &smPeer{t: t, n: n, user: user, resource: resource}
	p.c = xmpptest.Login(t, n.c2s(), "localhost", user, user+"-pw", resource)
	p.c.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	en := p.expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	p.id = en.Get("id")
	if p.id == "" {
		t.Fatalf("%s: <enabled/> without a resumption id: %s", user, en)
	}
	p.c.Send(`<presence/>`)
	return p
}

// next reads one element, counting stanzas and answering the server's <r/>.
func (p *smPeer) next() *stanza.Element {
	p.t.Helper()
	el, err := p.c.Next()
	if err != nil {
		p.t.Fatalf("%s: read: %v", p.user, err)
	}
	switch {
	case el.IsStanza():
		p.h++
	case el.Is(stanza.NSSM, "r"):
		p.c.Send(fmt.Sprintf(`<a xmlns='urn:xmpp:sm:3' h='%d'/>`, p.h))
	}
	return el
}

func (p *smPeer) expect(what string, match func(*stanza.Element) bool) *stanza.Element {
	p.t.Helper()
	for {
		if el := p.next(); match(el) {
			return el
		}
	}
}

// sync sends a ping to the server and returns every element that arrived
// before its answer: the server has then carried out all that p sent
// before, and written p everything that was due before the answer.
func (p *smPeer) sync() []*stanza.Element {
	p.t.Helper()
	p.pings++
	id := fmt.Sprintf("sync%d", p.pings)
	p.c.Send(`<iq type='get' id='` + id + `' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	var seen []*stanza.Element
	for {
		el := p.next()
		if el.Is(stanza.NSClient, "iq") && el.Get("id") == id {
			return seen
		}
		seen = append(seen, el)
	}
}

// ackRequest sends <r/> and returns what arrived before the server's <a/>,
// which comes once every stanza p sent before is durable (DESIGN rule 2).
func (p *smPeer) ackRequest() []*stanza.Element {
	p.t.Helper()
	p.c.Send(`<r xmlns='urn:xmpp:sm:3'/>`)
	var seen []*stanza.Element
	for {
		el := p.next()
		if el.Is(stanza.NSSM, "a") {
			return seen
		}
		seen = append(seen, el)
	}
}

// drop acknowledges everything handled and closes TCP without a stream
// end, then waits until the node hibernates the device.
func (p *smPeer) drop() {
	p.t.Helper()
	p.sync()
	p.c.Send(fmt.Sprintf(`<a xmlns='urn:xmpp:sm:3' h='%d'/>`, p.h))
	_ = p.c.Conn.Close()
	user := p.user + "@localhost"
	waitFor(p.t, user+" hibernating", 20*time.Second, func() bool {
		d := p.n.devices(p.t, user)
		return len(d) == 1 && d[0].Detached
	})
}

// resume opens a new connection and resumes the stream; what follows
// <resumed/> is the flushed queue.
func (p *smPeer) resume() {
	p.t.Helper()
	c := xmpptest.Dial(p.t, p.n.c2s(), "localhost")
	c.StartTLS()
	if cond := c.AuthPlain(p.user, p.user+"-pw"); cond != "" {
		p.t.Fatalf("%s: login: %s", p.user, cond)
	}
	p.c = c
	c.Send(fmt.Sprintf(`<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%d'/>`, p.id, p.h))
	el := p.expect("resumed", func(e *stanza.Element) bool { return e.Name.Space == stanza.NSSM })
	if !el.Is(stanza.NSSM, "resumed") {
		p.t.Fatalf("%s: resume answered with %s", p.user, el)
	}
}

// queued returns the device's queue length and size as jsm counts them.
func (p *smPeer) queued() (int, int64) {
	p.t.Helper()
	d := p.n.devices(p.t, p.user+"@localhost")
	if len(d) != 1 {
		p.t.Fatalf("%s: %d devices", p.user, len(d))
	}
	return d[0].QueuedCount, d[0].QueuedBytes
}

// m9Setup starts a node with small queue bounds and no rate limit (the
// flood is M9's business here, not S4's), logs in alice's phone and bob's
// desk, subscribed to each other, and drops alice's phone so that it
// hibernates.
func m9Setup(t testing.TB, mutate func(*fileConfig)) (alice, bob *smPeer) {
	t.Helper()
	n := startTestNode(t, func(c *fileConfig) {
		c.C2S.RateLimit = 0
		c.Log.Level = "warn"
		mutate(c)
	})
	n.addUser("alice", "alice-pw")
	n.addUser("bob", "bob-pw")
	alice, bob = loginSM(t, n, "alice", "phone"), loginSM(t, n, "bob", "desk")
	isPresence := func(from, typ string) func(*stanza.Element) bool {
		return func(e *stanza.Element) bool {
			return e.Is(stanza.NSClient, "presence") && strings.HasPrefix(e.Get("from"), from) && e.Get("type") == typ
		}
	}
	alice.c.Send(`<presence type='subscribe' to='bob@localhost'/>`)
	bob.expect("alice's request", isPresence("alice@localhost", "subscribe"))
	bob.c.Send(`<presence type='subscribed' to='alice@localhost'/><presence type='subscribe' to='alice@localhost'/>`)
	alice.expect("bob's presence", isPresence("bob@localhost/desk", ""))
	alice.expect("bob's request", isPresence("bob@localhost", "subscribe"))
	alice.c.Send(`<presence type='subscribed' to='bob@localhost'/>`)
	bob.expect("alice's presence", isPresence("alice@localhost/phone", ""))
	alice.drop()
	bob.sync()
	return alice, bob
}

// bounces returns the ids of the sender's messages that came back as
// errors, and fails the test for any bounce that is not
// resource-constraint (wait) from alice.
func bounces(t testing.TB, seen []*stanza.Element) []string {
	t.Helper()
	var ids []string
	for _, el := range seen {
		if !el.Is(stanza.NSClient, "message") || el.Get("type") != "error" {
			continue
		}
		e := el.Child(stanza.NSClient, "error")
		if e == nil || e.Get("type") != "wait" || e.Child(stanza.NSStanzaErr, "resource-constraint") == nil || el.Get("from") != "alice@localhost" {
			t.Errorf("bounce is not resource-constraint (wait) from alice@localhost: %s", el)
		}
		ids = append(ids, el.Get("id"))
	}
	return ids
}

// flushed returns what alice got from bob after resuming: message bodies
// and presence statuses, in the order they came.
func flushed(seen []*stanza.Element) (msgs, pres []string, order []string) {
	for _, el := range seen {
		if !strings.HasPrefix(el.Get("from"), "bob@localhost") {
			continue
		}
		switch {
		case el.Is(stanza.NSClient, "message"):
			b := el.ChildText(stanza.NSClient, "body")
			msgs = append(msgs, b)
			order = append(order, b)
		case el.Is(stanza.NSClient, "presence") && el.Get("type") == "":
			s := el.ChildText(stanza.NSClient, "status")
			pres = append(pres, s)
			order = append(order, s)
		}
	}
	return msgs, pres, order
}

func seq(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, prefix+strconv.Itoa(i))
	}
	return out
}

// TestM9FloodEntryBound: a queue of 50 entries. First 30 presence updates
// and 40 messages: the 20 oldest presences make room, nothing bounces, and
// alice resumes to the 10 newest presences and the 40 messages in order.
// Then 20 presences, 70 messages and one more presence: every presence
// goes, the 50 first messages are queued, the last 20 bounce to bob with
// resource-constraint (wait), the late presence is dropped; alice resumes
// to exactly the 50 queued messages, in order. Every message bob sent is
// either delivered or bounced, never both, never neither.
func TestM9FloodEntryBound(t *testing.T) {
	const bound = 50
	alice, bob := m9Setup(t, func(c *fileConfig) { c.Queue.MaxEntries = bound })

	// Round 1: presence gives way to messages.
	var flood strings.Builder
	for i := range 30 {
		fmt.Fprintf(&flood, `<presence><status>p%d</status></presence>`, i)
	}
	for i := range 40 {
		fmt.Fprintf(&flood, `<message to='alice@localhost' type='chat' id='a%d'><body>a%d</body></message>`, i, i)
	}
	bob.c.Send(flood.String())
	if b := bounces(t, append(bob.ackRequest(), bob.sync()...)); len(b) > 0 {
		t.Fatalf("round 1: bounced %q while presence could make room", b)
	}
	if n, _ := alice.queued(); n != bound {
		t.Errorf("round 1: %d queued, want %d", n, bound)
	}
	alice.resume()
	msgs, pres, order := flushed(alice.sync())
	if want := seq("p", 20, 30); !slices.Equal(pres, want) {
		t.Errorf("round 1: presences after resume %q, want the newest %q (oldest evicted first)", pres, want)
	}
	if want := seq("a", 0, 40); !slices.Equal(msgs, want) {
		t.Errorf("round 1: messages after resume %q, want %q", msgs, want)
	}
	if want := append(seq("p", 20, 30), seq("a", 0, 40)...); !slices.Equal(order, want) {
		t.Errorf("round 1: flushed out of queue order: %q", order)
	}

	// Round 2: past the bound, messages bounce.
	alice.drop()
	bob.sync()
	flood.Reset()
	for i := range 20 {
		fmt.Fprintf(&flood, `<presence><status>q%d</status></presence>`, i)
	}
	const sent = 70
	for i := range sent {
		fmt.Fprintf(&flood, `<message to='alice@localhost' type='chat' id='b%d'><body>b%d</body></message>`, i, i)
	}
	flood.WriteString(`<presence><status>late</status></presence>`)
	bob.c.Send(flood.String())
	bounced := bounces(t, append(bob.ackRequest(), bob.sync()...))
	if want := seq("b", bound, sent); !slices.Equal(bounced, want) {
		t.Errorf("round 2: bounced %q, want %q", bounced, want)
	}
	if n, _ := alice.queued(); n != bound {
		t.Errorf("round 2: %d queued, want %d", n, bound)
	}
	alice.resume()
	msgs, pres, _ = flushed(alice.sync())
	if len(pres) > 0 {
		t.Errorf("round 2: presences survived a queue full of messages: %q", pres)
	}
	if want := seq("b", 0, bound); !slices.Equal(msgs, want) {
		t.Errorf("round 2: alice got %q, want %q", msgs, want)
	}
	accounted := map[string]int{}
	for _, id := range append(slices.Clone(msgs), bounced...) {
		accounted[id]++
	}
	for _, id := range seq("b", 0, sent) {
		if accounted[id] != 1 {
			t.Errorf("message %s delivered or bounced %d times, want exactly once", id, accounted[id])
		}
	}
	// Once alice acknowledges them, nothing is left behind. (What is
	// written to her live stream, the answer to sync too, stays queued
	// until she acknowledges it: her last <a/> covers everything.)
	alice.sync()
	alice.c.Send(fmt.Sprintf(`<a xmlns='urn:xmpp:sm:3' h='%d'/>`, alice.h))
	waitFor(t, "alice's queue to empty after her acknowledgement", 10*time.Second, func() bool {
		n, size := alice.queued()
		return n == 0 && size == 0
	})
}

// TestM9FloodByteBound: the byte bound (max_bytes) refuses a message that
// would not fit, the same way, and the queue never holds more bytes than
// the bound.
func TestM9FloodByteBound(t *testing.T) {
	const maxBytes = 8 << 10
	alice, bob := m9Setup(t, func(c *fileConfig) { c.Queue.MaxBytes = maxBytes })
	body := strings.Repeat("x", 1000)
	var flood strings.Builder
	const sent = 20
	for i := range sent {
		fmt.Fprintf(&flood, `<message to='alice@localhost' type='chat' id='c%d'><body>c%d %s</body></message>`, i, i, body)
	}
	bob.c.Send(flood.String())
	bounced := bounces(t, append(bob.ackRequest(), bob.sync()...))
	n, size := alice.queued()
	if size > maxBytes || n+len(bounced) != sent || n < 5 || n > 8 {
		t.Fatalf("%d queued (%d bytes, bound %d), %d bounced, of %d sent", n, size, maxBytes, len(bounced), sent)
	}
	if want := seq("c", n, sent); !slices.Equal(bounced, want) {
		t.Errorf("bounced %q, want %q", bounced, want)
	}
	alice.resume()
	if got, want := firstFields(flushed(alice.sync())), seq("c", 0, n); !slices.Equal(got, want) {
		t.Errorf("alice got %q, want %q", got, want)
	}
}

// TestM9FloodMemoryBounded floods 20 000 messages of 1 KB (20 MB) at a
// suspended device whose queue holds 1 000, and checks that the node's
// live heap after a collection does not grow with the flood: the bounced
// messages are not kept anywhere. The node runs in this process, so the
// heap is the node's plus the test clients'. A memory bound, not a timing
// assertion; the margins are generous.
func TestM9FloodMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("20 000-message flood")
	}
	const (
		bound  = 1000
		total  = 20000
		window = 500
	)
	alice, bob := m9Setup(t, func(c *fileConfig) { c.Queue.MaxEntries = bound })
	body := strings.Repeat("y", 1000)
	live := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc + ms.StackInuse)
	}
	var bounced []string
	send := func(from, to int) {
		for i := from; i < to; i += window {
			var b strings.Builder
			for k := i; k < min(i+window, to); k++ {
				fmt.Fprintf(&b, `<message to='alice@localhost' type='chat' id='f%d'><body>f%d %s</body></message>`, k, k, body)
			}
			bob.c.Send(b.String())
			bounced = append(bounced, bounces(t, bob.ackRequest())...)
		}
		bounced = append(bounced, bounces(t, bob.sync())...)
	}
	// Warm up to the bound, so that the baseline holds a full queue and
	// what the node allocates once (buffers, badger's memtable).
	send(0, bound)
	if len(bounced) > 0 {
		t.Fatalf("bounced %d before the bound", len(bounced))
	}
	base := live()
	send(bound, total/2)
	mid := live()
	send(total/2, total)
	end := live()
	const mib = 1 << 20
	t.Logf("live heap+stacks: %.1f MiB with a full queue, %+.1f MiB after %d bounced, %+.1f MiB after %d bounced (%d MB sent)",
		float64(base)/mib, float64(mid-base)/mib, total/2-bound, float64(end-base)/mib, total-bound, total*len(body)/1e6)
	if want := seq("f", bound, total); !slices.Equal(bounced, want) {
		t.Fatalf("bounced %d messages (first %q), want f%d…f%d", len(bounced), bounced[:min(3, len(bounced))], bound, total-1)
	}
	// Keeping the bounced messages would be ≥ 19 MB of bodies alone.
	if grew := end - base; grew > 8*mib {
		t.Errorf("live heap grew %.1f MiB during the flood; bounded queue should keep it flat", float64(grew)/mib)
	}
	if n, size := alice.queued(); n != bound {
		t.Errorf("%d queued (%d bytes), want %d", n, size, bound)
	}
	alice.resume()
	got := firstFields(flushed(alice.sync()))
	if want := seq("f", 0, bound); !slices.Equal(got, want) {
		t.Errorf("alice got %d messages (first %q), want f0…f%d in order", len(got), got[:min(3, len(got))], bound-1)
	}
}

// firstFields returns the first word of each message body.
func firstFields(msgs, _, _ []string) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		if f := strings.Fields(m); len(f) > 0 {
			out[i] = f[0]
		}
	}
	return out
}
