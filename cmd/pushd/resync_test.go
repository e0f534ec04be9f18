package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"pushd/cluster"
	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// H2 when a backup is lost: alice's primary sends her whole state to her
// new backup at once, not just what changes from then on. Without that,
// the messages queued before the first crash exist only on her primary,
// and its crash loses them although they were acknowledged.
func TestNewBackupGetsWholeState(t *testing.T) {
	fc := newFailoverCast(t, nil)
	alice, P, B, C := fc.alice, fc.P, fc.B, fc.bobHome
	// carol has no device: her messages go to her offline store, which is
	// replicated the same way (XEP-0160).
	carol := addUserPlacedAs(t, []*testNode{P, B, C}, "carol", alice)
	a, smID := fc.phone(t)
	fc.hibernate(t, a)
	b := fc.desk(t)
	var burst strings.Builder
	for i := range 3 {
		fmt.Fprintf(&burst, `<message to='%s/phone' type='chat'><body>before %d</body></message>`, alice, i)
	}
	burst.WriteString(`<r xmlns='urn:xmpp:sm:3'/>`)
	fmt.Fprintf(&burst, `<message to='%s' type='chat'><body>c1</body></message><r xmlns='urn:xmpp:sm:3'/>`, carol)
	b.Send(burst.String())
	b.Expect("ack of 4", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") && e.Get("h") == "4" })

	// Her backup crashes; the third node becomes her backup and must get
	// the three messages without any new one being written.
	check(t, B.cluster.c.Shutdown())
	B.stopAbruptly()
	waitFor(t, "alice's queue and session on her new backup", 30*time.Second, func() bool {
		if _, backup := P.cluster.c.Placement().PrimaryBackup(alice); backup != C.cluster.c.Name() {
			return false
		}
		// What her queue holds beyond the three messages (presence) must
		// be there too.
		held, _ := P.queue.Stats(alice + "/phone")
		count, _ := C.queue.Stats(alice + "/phone")
		C.cluster.mu.Lock()
		_, session := C.cluster.replicas[alice+"/phone"]
		C.cluster.mu.Unlock()
		offline, _ := C.queue.CountOffline(carol)
		return held >= 3 && count == held && session && offline == 1
	})
	b.Send(fmt.Sprintf(`<message to='%s/phone' type='chat'><body>between</body></message>`+
		`<message to='%s' type='chat'><body>c2</body></message><r xmlns='urn:xmpp:sm:3'/>`, alice, carol))
	b.Expect("ack of 6", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") && e.Get("h") == "6" })
	// carol fetches her offline messages at her primary, then goes; what
	// she got must not come again from the node that takes her over.
	if got := offlineBodies(t, P, carol, 2); !slices.Equal(got, []string{"c1", "c2"}) {
		t.Fatalf("carol at her primary got %q, want c1, c2", got)
	}
	waitFor(t, "carol gone from her primary", 10*time.Second, func() bool { return len(P.devices(t, carol)) == 0 })
	b.Send(fmt.Sprintf(`<message to='%s' type='chat'><body>c3</body></message><r xmlns='urn:xmpp:sm:3'/>`, carol))
	b.Expect("ack of 7", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") && e.Get("h") == "7" })

	// Now her primary crashes too: the third node serves her, with all of it.
	fc.crash(t, P, C)
	r, el := resumeAt(t, C, smID, 1)
	if !el.Is(stanza.NSSM, "resumed") {
		t.Fatalf("resume on the third node: %s", el)
	}
	want := []string{"before 0", "before 1", "before 2", "between"}
	var got []string
	for len(got) < len(want) {
		el, err := r.Next()
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		if el.Is(stanza.NSClient, "message") {
			got = append(got, el.ChildText(stanza.NSClient, "body"))
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("alice got %q, want %q once, in order", got, want)
	}
	if got := offlineBodies(t, C, carol, 1); !slices.Equal(got, []string{"c3"}) {
		t.Fatalf("carol after both crashes got %q, want c3 once", got)
	}
}

// addUserPlacedAs adds a user named prefix<i> whose primary and backup are
// like's, and returns the JID.
func addUserPlacedAs(t *testing.T, nodes []*testNode, prefix, like string) string {
	t.Helper()
	place := nodes[0].cluster.c.Placement()
	wantP, wantB := place.PrimaryBackup(like)
	for i := 0; ; i++ {
		name := prefix + strconv.Itoa(i)
		if p, b := place.PrimaryBackup(name + "@localhost"); p == wantP && b == wantB {
			user := nodes[0].addUser(name, bobPW)
			waitAccount(t, nodes, user)
			return user
		}
	}
}

// offlineBodies logs user (a JID) in at n, sends initial presence and returns the
// bodies of the first count messages, then waits a moment for more.
func offlineBodies(t *testing.T, n *testNode, user string, count int) []string {
	t.Helper()
	c := xmpptest.Login(t, n.c2s(), "localhost", strings.TrimSuffix(user, "@localhost"), bobPW, "desk")
	defer c.Conn.Close()
	c.Send(`<presence/>`)
	var got []string
	for len(got) < count {
		got = append(got, c.Expect("offline message", func(e *stanza.Element) bool { return e.Is(stanza.NSClient, "message") }).ChildText(stanza.NSClient, "body"))
	}
	// Anything more (a message twice) would come before this answer.
	c.Send(`<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>`)
	for {
		el := c.Expect("ping answer or more", func(e *stanza.Element) bool {
			return e.Is(stanza.NSClient, "message") || e.Get("id") == "ping"
		})
		if el.Get("id") == "ping" {
			return got
		}
		got = append(got, el.ChildText(stanza.NSClient, "body"))
	}
}

// H4 fallback and H6 together: a node that comes back after its users were
// served elsewhere does not serve its own store's stale copy of them. alice
// got her messages on the backup and logged out there; when her primary
// returns with those messages still on its disk, her next login there
// gets none of them again, and it pushes for her no more.
func TestReturningNodeForgetsWhatWasServedMeanwhile(t *testing.T) {
	fc := newFailoverCast(t, nil)
	alice, P, B := fc.alice, fc.P, fc.B
	a, smID := fc.phone(t)
	fc.hibernate(t, a)
	b := fc.desk(t)
	b.Send(fmt.Sprintf(`<message to='%[1]s/phone' type='chat'><body>m1</body></message>`+
		`<message to='%[1]s/phone' type='chat'><body>m2</body></message><r xmlns='urn:xmpp:sm:3'/>`, alice))
	b.Expect("ack of 2", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") && e.Get("h") == "2" })
	if n, _ := P.queue.Stats(alice + "/phone"); n < 2 {
		t.Fatalf("alice's queue on her primary holds %d, want the 2 messages", n)
	}

	cfg := P.cfg
	fc.crash(t, P, B)
	// She had handled one stanza before she hibernated (the answer to
	// her push enable).
	r, el := resumeAt(t, B, smID, 1)
	if !el.Is(stanza.NSSM, "resumed") {
		t.Fatalf("resume on the backup: %s", el)
	}
	for _, want := range []string{"m1", "m2"} {
		if got := r.Expect(want, func(e *stanza.Element) bool { return e.Is(stanza.NSClient, "message") }).ChildText(stanza.NSClient, "body"); got != want {
			t.Fatalf("alice on the backup got %q, want %q", got, want)
		}
	}
	// She logs out cleanly: acknowledged everything, push off with it (M8).
	r.Send(`<a xmlns='urn:xmpp:sm:3' h='3'/></stream:stream>`)
	waitFor(t, "alice gone from the backup", 10*time.Second, func() bool { return len(B.devices(t, alice)) == 0 })

	// Her primary comes back on its data directory.
	cfg.Cluster.Join = []string{B.cfg.Cluster.Bind}
	P2 := startTestNode(t, func(c *fileConfig) { *c = cfg })
	waitFor(t, "her primary serving again", 30*time.Second, func() bool {
		return !P2.cluster.syncingNow() && P2.cluster.c.Placement().Primary(alice) == cfg.Cluster.NodeName
	})
	if n, _ := P2.queue.Stats(alice + "/phone"); n != 0 {
		t.Errorf("the returned node still holds %d stale entries for alice's phone", n)
	}
	regs, err := P2.db.PushRegistrations().Load()
	check(t, err)
	if len(regs[alice+"/phone"]) != 0 {
		t.Errorf("the returned node still holds alice's push registration: %v", regs[alice+"/phone"])
	}
	c := xmpptest.Login(t, P2.c2s(), "localhost", "alice", alicePW, "phone")
	c.Send(`<presence/><iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>`)
	el = c.Expect("ping answer", func(e *stanza.Element) bool {
		return e.Is(stanza.NSClient, "message") || e.Get("id") == "ping"
	})
	if el.Is(stanza.NSClient, "message") {
		t.Fatalf("alice got %q again after her primary returned", el.ChildText(stanza.NSClient, "body"))
	}
}

// H2 when the backup role moves on: a node that no longer backs a user up
// drops its copy of her (once membership has been quiet a moment). Kept,
// it would be served as it is should the role come back to it and her
// primary fail before a full copy covered every device: a device that
// logged out meanwhile is in no copy and would come back to life.
func TestStaleBackupCopyDropped(t *testing.T) {
	nodes := clusterOf(t, 3, func(_ int, c *fileConfig) {
		c.Component.Accept = append(c.Component.Accept, componentAccept{Domain: failoverApp, Secret: appSecret})
		c.Cluster.sweepDelay = 200 * time.Millisecond
	})
	// A user whose backup among n1–n3 is not her backup once n4 joins.
	three := cluster.NewPlacement([]string{"n1", "n2", "n3"})
	four := cluster.NewPlacement([]string{"n1", "n2", "n3", "n4"})
	var name string
	for i := 0; name == ""; i++ {
		u := "alice" + strconv.Itoa(i)
		p3, b3 := three.PrimaryBackup(u + "@localhost")
		if p4, b4 := four.PrimaryBackup(u + "@localhost"); p4 == p3 && b4 == "n4" && b3 != "n4" {
			name = u
		}
	}
	alice := nodes[0].addUser(name, alicePW)
	p, b := three.PrimaryBackup(alice)
	fc := failoverCast{alice: alice, P: byName(nodes, p), B: byName(nodes, b)}
	fc.bob, fc.bobHome = addBobAwayFrom(nodes)
	waitAccount(t, nodes, fc.bob)
	old := fc.B

	a := xmpptest.Login(t, fc.P.c2s(), "localhost", name, alicePW, "phone")
	a.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	a.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	fc.hibernate(t, a)
	d := fc.desk(t)
	d.Send(fmt.Sprintf(`<message to='%s/phone' type='chat'><body>m1</body></message><r xmlns='urn:xmpp:sm:3'/>`, alice))
	d.Expect("ack", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") && e.Get("h") == "1" })
	dev := alice + "/phone"
	held := func(n *testNode) (int, bool) {
		count, _ := n.queue.Stats(dev)
		n.cluster.mu.Lock()
		_, session := n.cluster.replicas[dev]
		n.cluster.mu.Unlock()
		return count, session
	}
	waitFor(t, "her copy on her backup", 10*time.Second, func() bool { c, s := held(old); return c > 0 && s })

	n4 := startTestNode(t, func(c *fileConfig) { clusterMember(t, c, "n4", nodes[0]) })
	waitFor(t, "her copy on n4, her new backup", 30*time.Second, func() bool { c, s := held(n4); return c > 0 && s })
	waitFor(t, "her old backup's copy dropped", 30*time.Second, func() bool { c, s := held(old); return c == 0 && !s })
}
