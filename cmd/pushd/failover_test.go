package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"pushd/internal/peertest"
	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// clusterOf starts n nodes in this process, joined into one cluster on
// 127.0.0.1, each with its own c2s and component listeners.
func clusterOf(t testing.TB, count int, mutate func(i int, c *fileConfig)) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := range count {
		nodes = append(nodes, startTestNode(t, func(c *fileConfig) {
			var join []*testNode
			if i > 0 {
				join = nodes[:1]
			}
			clusterMember(t, c, fmt.Sprintf("n%d", i+1), join...)
			if mutate != nil {
				mutate(i, c)
			}
		}))
	}
	// Formed: every member sees every other alive and has finished its
	// sync (a node the others briefly took for dead, as when a test node
	// restarts on fresh ports, syncs again and holds its clients' logins
	// meanwhile).
	waitFor(t, "cluster formed", 30*time.Second, func() bool {
		for _, n := range nodes {
			if n.cluster.syncingNow() {
				return false
			}
			alive := 0
			for _, m := range n.cluster.c.Members() {
				if m.State.Live() {
					alive++
				}
			}
			if alive != count {
				return false
			}
		}
		return true
	})
	return nodes
}

// clusterMember makes c the config of cluster member name on fresh ports
// of 127.0.0.1, joining via join (none: the first member).
func clusterMember(t testing.TB, c *fileConfig, name string, join ...*testNode) {
	ports := peertest.FreePorts(t, 2)
	c.Cluster.NodeName = name
	c.Cluster.Bind = peertest.Loopback(ports[0])
	c.Cluster.Replication = peertest.Loopback(ports[1])
	for _, n := range join {
		c.Cluster.Join = append(c.Cluster.Join, n.cfg.Cluster.Bind)
	}
	c.Cluster.SecretKey = "MDEyMzQ1Njc4OWFiY2RlZg==" // 16 bytes
}

// waitAccount waits until every node holds user's account (accounts are
// copied to every member).
func waitAccount(t testing.TB, nodes []*testNode, user string) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, "the account on "+n.cluster.c.Name(), 10*time.Second, func() bool {
			_, err := n.db.Accounts().Credentials(mustJID(t, user))
			return err == nil
		})
	}
}

func byName(nodes []*testNode, name string) *testNode {
	for _, n := range nodes {
		if n.cluster.c.Name() == name {
			return n
		}
	}
	return nil
}

// H1–H4 in one process: alice's phone hibernates on her primary with push
// enabled; bob, on another node, sends her messages that are acknowledged
// only once replicated; her primary crashes; the backup takes her over at
// once, pushes for new messages, and her phone resumes its XEP-0198
// stream there and gets every acknowledged message once, in order.
func TestFailoverToBackup(t *testing.T) {
	fc := newFailoverCast(t, nil)
	alice, P, B := fc.alice, fc.P, fc.B
	// An app server on the primary and on the backup.
	appP, appB := appAt(t, P), appAt(t, B)

	a, smID := fc.phone(t)
	fc.hibernate(t, a)

	b := fc.desk(t)
	const count = 5
	var burst strings.Builder
	for i := range count {
		fmt.Fprintf(&burst, `<message to='%s/phone' type='chat'><body>before %d</body></message>`, alice, i)
	}
	burst.WriteString(`<r xmlns='urn:xmpp:sm:3'/>`)
	b.Send(burst.String())
	ack := b.Expect("ack", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") })
	if h, _ := strconv.Atoi(ack.Get("h")); h < count {
		t.Fatalf("bob's messages acknowledged %d, want %d", h, count)
	}
	if _, err := appP.Next(10 * time.Second); err != nil {
		t.Fatalf("no push from the primary: %v", err)
	}

	// The primary crashes: no goodbye to the cluster.
	crashed := time.Now()
	fc.crash(t, P, B)
	t.Logf("H3: backup took over %v after the crash", time.Since(crashed).Round(time.Millisecond))

	// bob's node now forwards to the backup; pushes come from there.
	b.Send(fmt.Sprintf(`<message to='%s/phone' type='chat'><body>after</body></message><r xmlns='urn:xmpp:sm:3'/>`, alice))
	b.Expect("ack", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") && e.Get("h") == strconv.Itoa(count+1) })
	if _, err := appB.Next(10 * time.Second); err != nil {
		t.Fatalf("no push from the new primary: %v", err)
	}
	t.Logf("H3: first push from the new primary %v after the crash", time.Since(crashed).Round(time.Millisecond))

	// H4: alice resumes on the backup with the stream id she got.
	r, el := resumeAt(t, B, smID, 1)
	if !el.Is(stanza.NSSM, "resumed") {
		t.Fatalf("resume on the backup: %s", el)
	}
	got := messageBodies(t, r, count+1)
	want := []string{"before 0", "before 1", "before 2", "before 3", "before 4", "after"}
	if !slices.Equal(got, want) {
		t.Fatalf("alice got %q, want %q once, in order", got, want)
	}
}

// failoverApp is the XEP-0114 app server domain of the failover tests.
const failoverApp = "app.example.test"

// failoverCast is three nodes that accept failoverApp, alice, and a bob
// who lives on the third node, so that the crash of her primary or of her
// backup spares him.
type failoverCast struct {
	alice, bob    string
	P, B, bobHome *testNode // alice's primary and backup, bob's node
}

func newFailoverCast(t *testing.T, mutate func(c *fileConfig)) failoverCast {
	t.Helper()
	nodes := clusterOf(t, 3, func(_ int, c *fileConfig) {
		c.Component.Accept = append(c.Component.Accept, componentAccept{Domain: failoverApp, Secret: appSecret})
		if mutate != nil {
			mutate(c)
		}
	})
	var fc failoverCast
	fc.alice = nodes[0].addUser("alice", alicePW)
	primary, backup := nodes[0].cluster.c.Placement().PrimaryBackup(fc.alice)
	fc.bob, fc.bobHome = addBobAwayFrom(nodes, primary, backup)
	fc.P, fc.B = byName(nodes, primary), byName(nodes, backup)
	waitAccount(t, nodes, fc.bob)
	return fc
}

// phone logs alice's phone in at her primary with XEP-0198 resumption
// and push enabled at failoverApp; it returns the client and the
// resumption id.
func (fc failoverCast) phone(t *testing.T) (*xmpptest.Client, string) {
	t.Helper()
	a := xmpptest.Login(t, fc.P.c2s(), "localhost", "alice", alicePW, "phone")
	a.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	enabled := a.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	a.Send(`<iq type='set' id='push1'><enable xmlns='urn:xmpp:push:0' jid='` + failoverApp + `' node='n1'/></iq>`)
	a.Expect("push enabled", func(e *stanza.Element) bool { return e.Get("id") == "push1" && e.Get("type") == "result" })
	return a, enabled.Get("id")
}

// hibernate drops the phone's connection and waits until her primary
// hibernates it.
func (fc failoverCast) hibernate(t *testing.T, a *xmpptest.Client) {
	t.Helper()
	_ = a.Conn.Close()
	waitFor(t, "alice hibernating", 10*time.Second, func() bool {
		d := fc.P.devices(t, fc.alice)
		return len(d) == 1 && d[0].Detached
	})
}

// crash stops dead as a crash would (no goodbye to the cluster) and waits
// until heir holds alice's phone, hibernating.
func (fc failoverCast) crash(t *testing.T, dead, heir *testNode) {
	t.Helper()
	check(t, dead.cluster.c.Shutdown())
	dead.stopAbruptly()
	waitFor(t, "alice's phone taken over by "+heir.cluster.c.Name(), 30*time.Second, func() bool {
		d := heir.devices(t, fc.alice)
		return len(d) == 1 && d[0].Detached
	})
}

// resumeAt resumes alice's phone stream smID at n, saying she handled h
// stanzas; it returns the client and the server's answer (<resumed/> or
// <failed/>).
func resumeAt(t *testing.T, n *testNode, smID string, h int) (*xmpptest.Client, *stanza.Element) {
	t.Helper()
	r := xmpptest.Dial(t, n.c2s(), "localhost")
	r.StartTLS()
	if cond := r.AuthPlain("alice", alicePW); cond != "" {
		t.Fatal(cond)
	}
	r.Send(`<resume xmlns='urn:xmpp:sm:3' h='` + strconv.Itoa(h) + `' previd='` + smID + `'/>`)
	return r, r.Expect("resumed", func(e *stanza.Element) bool { return e.Name.Space == stanza.NSSM })
}

// messageBodies reads c until it has the bodies of n messages.
func messageBodies(t *testing.T, c *xmpptest.Client, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		el, err := c.Next()
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		if el.Is(stanza.NSClient, "message") {
			got = append(got, el.ChildText(stanza.NSClient, "body"))
		}
	}
	return got
}

// bodiesUntilAck asks c's server for an acknowledgement and returns the
// bodies of the messages that come before it: its answer comes after
// everything it flushed on resumption.
func bodiesUntilAck(t *testing.T, c *xmpptest.Client) []string {
	t.Helper()
	c.Send(`<r xmlns='urn:xmpp:sm:3'/>`)
	var got []string
	for {
		el, err := c.Next()
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		if el.Is(stanza.NSClient, "message") {
			got = append(got, el.ChildText(stanza.NSClient, "body"))
		}
		if el.Is(stanza.NSSM, "a") {
			return got
		}
	}
}

// desk logs bob in at his node with XEP-0198 (acknowledgements only).
func (fc failoverCast) desk(t *testing.T) *xmpptest.Client {
	t.Helper()
	b := xmpptest.Login(t, fc.bobHome.c2s(), "localhost", strings.TrimSuffix(fc.bob, "@localhost"), bobPW, "desk")
	b.Send(`<enable xmlns='urn:xmpp:sm:3'/>`)
	b.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	return b
}

// appAt connects an app server for failoverApp to n.
func appAt(t *testing.T, n *testNode) *peertest.AppServer {
	a := peertest.StartAppServer(t, peertest.AppServerOptions{Addr: n.router.Addr("component"), Domain: failoverApp, Secret: appSecret, Mode: peertest.AppServerOK})
	check(t, a.WaitConnected())
	return a
}

// addBobAwayFrom adds a bob whose primary is none of away, so that their
// crashes spare him, and returns his JID and the node he lives on.
func addBobAwayFrom(nodes []*testNode, away ...string) (string, *testNode) {
	place := nodes[0].cluster.c.Placement()
	for i := 0; ; i++ {
		name := "bob" + strconv.Itoa(i)
		if home := place.Primary(name + "@localhost"); !slices.Contains(away, home) {
			return nodes[0].addUser(name, bobPW), byName(nodes, home)
		}
	}
}

func plainAuth(user, pw string) string {
	return base64Std("\x00" + user + "\x00" + pw)
}

// H3 with pushd's own push component: a phone registered and hibernated
// on its primary is still pushed, through APNS, by the backup's component
// after the primary crashes (registrations are replicated to every node).
func TestFailoverOwnPush(t *testing.T) {
	peertest.RequirePeer(t, peertest.PeerSlixmpp)
	apns, withAPNS := apnsTestServer(t)
	nodes := clusterOf(t, 3, func(_ int, c *fileConfig) { withAPNS(c) })
	first := nodes[0]
	alice := first.addUser("alice", alicePW)
	primary, backup := first.cluster.c.Placement().PrimaryBackup(alice)
	bob, bobHome := addBobAwayFrom(nodes, primary)
	P, B := byName(nodes, primary), byName(nodes, backup)
	for _, n := range nodes {
		waitFor(t, "push component and accounts on "+n.cluster.c.Name(), 20*time.Second, func() bool {
			_, err := n.db.Accounts().Credentials(mustJID(t, bob))
			return err == nil && n.push != nil && n.push.component.Connected()
		})
	}
	args := func(n *testNode, user, pw string, extra ...string) []string {
		return append(append(peertest.ServerArgs(t, n.c2s(), "localhost"),
			"--user", user, "--password", pw, "--component", "push.localhost"), extra...)
	}
	reg := peertest.Slixmpp(t, "register.py", args(P, alice, alicePW, "--token", tokAlice, "--device-id", "phone-1")...)
	if reg.String("status") != "completed" || !reg.Bool("enabled") || !reg.Bool("hibernated") {
		t.Fatalf("registration: %v", reg)
	}
	waitFor(t, "alice hibernating and her registration on the backup", 10*time.Second, func() bool {
		d := P.devices(t, alice)
		devs, _ := B.push.registry.List()
		return len(d) == 1 && d[0].Detached && len(devs) == 1
	})

	failoverCast{alice: alice}.crash(t, P, B)
	peertest.Slixmpp(t, "register.py", args(bobHome, bob, bobPW, "--mode", "send", "--to", alice, "--body", "after the crash")...)
	reqs := apns.WaitRequests(1, 20*time.Second)
	if len(reqs) != 1 || reqs[0].Token != tokAlice || reqs[0].Status != 200 {
		t.Fatalf("APNS after failover: %+v", reqs)
	}
}

// H2/H4 for a client that is connected when its primary dies: everything
// written to a managed stream stays queued (and replicated) until the
// client acknowledges it, the client's acknowledged count is replicated
// with it, and so is its push registration. After the crash the backup
// pushes for the phone, and the phone resumes there: what it had not
// acknowledged comes again, once, in order, and the backup reports the
// count of its own stanzas this node had acknowledged, so that it sends
// none twice.
func TestFailoverLiveSession(t *testing.T) {
	fc := newFailoverCast(t, nil)
	alice, bob, P, B := fc.alice, fc.bob, fc.P, fc.B
	appB := appAt(t, B)

	isMsg := func(e *stanza.Element) bool { return e.Is(stanza.NSClient, "message") }
	a, smID := fc.phone(t)

	b := fc.desk(t)
	b.Send(fmt.Sprintf(`<message to='%[1]s/phone' type='chat'><body>m1</body></message>`+
		`<message to='%[1]s/phone' type='chat'><body>m2</body></message>`+
		`<message to='%[1]s/phone' type='chat'><body>m3</body></message><r xmlns='urn:xmpp:sm:3'/>`, alice))
	b.Expect("ack of 3", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") && e.Get("h") == "3" })
	for _, body := range []string{"m1", "m2", "m3"} {
		if got := a.Expect(body, isMsg).ChildText(stanza.NSClient, "body"); got != body {
			t.Fatalf("alice got %q, want %q", got, body)
		}
	}
	// alice has read 4 stanzas (the IQ result, m1–m3) and acknowledges 2.
	a.Send(`<a xmlns='urn:xmpp:sm:3' h='2'/>`)
	waitFor(t, "the backup to hold alice's acknowledgement", 10*time.Second, func() bool {
		B.cluster.mu.Lock()
		defer B.cluster.mu.Unlock()
		r, ok := B.cluster.replicas[alice+"/phone"]
		return ok && r.Acked == 2 && r.Live
	})
	// Her own message is acknowledged (her second stanza).
	a.Send(fmt.Sprintf(`<message to='%s/desk' type='chat'><body>from alice</body></message><r xmlns='urn:xmpp:sm:3'/>`, bob))
	a.Expect("alice's ack", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") && e.Get("h") == "2" })
	b.ExpectBody("from alice")

	fc.crash(t, P, B)
	// Her registration came with her session: the backup pushes.
	b.Send(fmt.Sprintf(`<message to='%s/phone' type='chat'><body>after</body></message><r xmlns='urn:xmpp:sm:3'/>`, alice))
	b.Expect("ack of 4", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") && e.Get("h") == "4" })
	if _, err := appB.Next(10 * time.Second); err != nil {
		t.Fatalf("no push from the backup for a phone that was connected to the failed node: %v", err)
	}

	// She processed m2 but not m3 before the crash: she says h=3.
	r, el := resumeAt(t, B, smID, 3)
	if !el.Is(stanza.NSSM, "resumed") || el.Get("h") != "2" {
		t.Fatalf("resume on the backup: %s, want <resumed h='2'/>", el)
	}
	got := bodiesUntilAck(t, r)
	if want := []string{"m3", "after"}; !slices.Equal(got, want) {
		t.Fatalf("alice got %q after resuming, want %q once, in order", got, want)
	}
}

// H3 for the last moments of a primary: a message it queued and
// acknowledged inside the coalescing window (M3), whose notification it
// never sent, is pushed by the backup when it takes the phone over; what
// the primary had pushed for is not pushed again.
func TestFailoverPushesWhatPrimaryDidNot(t *testing.T) {
	fc := newFailoverCast(t, func(c *fileConfig) {
		c.PushTriggers.Coalesce = duration(time.Hour) // the second message waits for its notification
	})
	alice, P, B := fc.alice, fc.P, fc.B
	appP, appB := appAt(t, P), appAt(t, B)

	a, _ := fc.phone(t)
	fc.hibernate(t, a)

	b := fc.desk(t)
	send := func(body string, h int) {
		b.Send(fmt.Sprintf(`<message to='%s/phone' type='chat'><body>%s</body></message><r xmlns='urn:xmpp:sm:3'/>`, alice, body))
		b.Expect("ack", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") && e.Get("h") == strconv.Itoa(h) })
	}
	send("pushed by the primary", 1)
	if p, err := appP.Next(10 * time.Second); err != nil || p.Fields["message-count"] != "1" {
		t.Fatalf("the primary's push: %+v, %v", p, err)
	}
	waitFor(t, "the backup to know what the primary pushed", 10*time.Second, func() bool {
		B.cluster.mu.Lock()
		defer B.cluster.mu.Unlock()
		return B.cluster.replicas[alice+"/phone"].Pushed > 0
	})
	send("left to coalesce", 2)
	if err := appP.ExpectNone(200 * time.Millisecond); err != nil {
		t.Fatalf("the primary pushed inside its coalescing window: %v", err)
	}

	check(t, P.cluster.c.Shutdown())
	P.stopAbruptly()
	p, err := appB.Next(30 * time.Second)
	if err != nil {
		t.Fatalf("the backup did not push for the message the primary left unpushed: %v", err)
	}
	if p.Fields["message-count"] != "1" {
		t.Errorf("the backup's push counts %v messages, want 1 (only the one not pushed before)", p.Fields["message-count"])
	}
	if err := appB.ExpectNone(500 * time.Millisecond); err != nil {
		t.Errorf("a second push from the backup: %v", err)
	}
}
