package main

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// H7 with a client that ignores see-other-host (the in-tree raw client):
// alice's phone connects to the one node that is neither her primary nor
// her backup, and is served there, her stream carried to her primary; she
// chats, hibernates, is pushed, and resumes through that node, before her
// primary is killed and after (then her stream is carried to her backup,
// which took her over).
func TestAnyNodeServesRawClient(t *testing.T) {
	fc := newFailoverCast(t, nil)
	alice, P, B, edge := fc.alice, fc.P, fc.B, fc.bobHome
	appP, appB := appAt(t, P), appAt(t, B)
	b := fc.desk(t)

	a := xmpptest.Login(t, edge.c2s(), "localhost", "alice", alicePW, "phone")
	a.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	smID := a.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") }).Get("id")
	a.Send(`<iq type='set' id='push1'><enable xmlns='urn:xmpp:push:0' jid='` + failoverApp + `' node='n1'/></iq><presence/>`)
	a.Expect("push enabled", func(e *stanza.Element) bool { return e.Get("id") == "push1" && e.Get("type") == "result" })
	if d := P.devices(t, alice); len(d) != 1 {
		t.Fatalf("alice's session on her primary: %+v, want her phone", d)
	}
	if d := edge.devices(t, alice); len(d) != 0 {
		t.Fatalf("alice's session on the node she reached: %+v, want none", d)
	}

	// Chat both ways through the node she reached.
	a.Send(fmt.Sprintf(`<message to='%s/desk' type='chat'><body>hello bob</body></message>`, fc.bob))
	b.Expect("alice's message", func(e *stanza.Element) bool { return e.ChildText(stanza.NSClient, "body") == "hello bob" })
	b.Send(fmt.Sprintf(`<message to='%s' type='chat'><body>hello alice</body></message>`, alice))
	a.Expect("bob's message", func(e *stanza.Element) bool { return e.ChildText(stanza.NSClient, "body") == "hello alice" })

	// resume has alice's phone come back through the node she reached,
	// saying she handled h stanzas, and returns the bodies it gets then.
	resume := func(h, want int) (*xmpptest.Client, []string) {
		t.Helper()
		r, el := resumeAt(t, edge, smID, h)
		if !el.Is(stanza.NSSM, "resumed") {
			t.Fatalf("M5/H4: resumption through the node she reached: %s", el)
		}
		return r, messageBodies(t, r, want)
	}
	hibernate := func(c *xmpptest.Client, on *testNode) {
		t.Helper()
		_ = c.Conn.Close()
		waitFor(t, "alice hibernating on "+on.cluster.c.Name(), 10*time.Second, func() bool {
			d := on.devices(t, alice)
			return len(d) == 1 && d[0].Detached
		})
	}
	send := func(body string) {
		t.Helper()
		b.Send(fmt.Sprintf(`<message to='%s' type='chat'><body>%s</body></message><r xmlns='urn:xmpp:sm:3'/>`, alice, body))
		b.Expect("ack of "+body, func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") })
	}

	hibernate(a, P)
	send("while away")
	if _, err := appP.Next(10 * time.Second); err != nil {
		t.Fatalf("M3: no push from her primary: %v", err)
	}
	// She acknowledged nothing: what she was written comes again, once, in
	// order, then what came while she was away.
	r, got := resume(0, 2)
	if want := []string{"hello alice", "while away"}; !slices.Equal(got, want) {
		t.Fatalf("M5: after resuming: %q, want %q", got, want)
	}

	hibernate(r, P)
	fc.crash(t, P, B)
	send("after the crash")
	if _, err := appB.Next(20 * time.Second); err != nil {
		t.Fatalf("H3: no push from her new primary: %v", err)
	}
	_, got = resume(0, 3)
	if want := []string{"hello alice", "while away", "after the crash"}; !slices.Equal(got, want) {
		t.Fatalf("H4: after resuming on her new primary through the node she reached: %q, want %q", got, want)
	}
}
