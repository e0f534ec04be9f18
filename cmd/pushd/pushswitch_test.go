package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"pushd/component/payload"
	"pushd/internal/admin"
	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// adminOf is the admin API client of an in-process node.
func adminOf(t *testing.T, n *testNode) *admin.Client {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(n.cfg.DataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return &admin.Client{Addr: n.admin.Addr(), Token: strings.TrimSpace(string(tok))}
}

// pushCmd runs `pushd push VERB --config` against n's config file and
// returns what it printed.
func pushCmd(t *testing.T, n *testNode, verb string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run([]string{"push", verb, "--config", n.cfgFile}, nil, &out, &errb); err != nil {
		t.Fatalf("pushd push %s: %v\n%s", verb, err, errb.String())
	}
	return out.String()
}

// metricAt reads one series of n's /metrics (-1: not there).
func metricAt(n *testNode, series string) float64 {
	v, ok, err := readMetric(n.admin.Addr(), series)
	if !ok || err != nil {
		return -1
	}
	return v
}

const suppressedMessages = `pushd_pushes_suppressed_total{kind="message",provider="apns"}`

// Issue 14, O2, the push switch, on three in-process nodes with pushd's
// own push component and an APNS test server: alice's phone registers,
// enables push and hibernates on her primary. `pushd push disable` at
// another node stops pushes on all three within a second; bob's messages
// to her, sent at each node, are acknowledged and queued, and no push
// reaches APNS. `pushd push enable`: nothing held back goes out, but the
// next message pushes her phone (jsm's summary counts everything queued
// since she left); her registration was kept everywhere, and her phone
// resumes and gets every message once, in order.
func TestPushSwitchCluster(t *testing.T) {
	apns, withAPNS := apnsTestServer(t)
	nodes := clusterOf(t, 3, func(_ int, c *fileConfig) {
		withAPNS(c)
		// Each message's notification is published at once (M3's window
		// shorter than the time between bob's messages): when the switch
		// goes back on, no publish is left pending from before.
		c.PushTriggers.Coalesce = duration(time.Millisecond)
	})
	alice := nodes[0].addUser("alice", alicePW)
	primary, _ := nodes[0].cluster.c.Placement().PrimaryBackup(alice)
	P := byName(nodes, primary)
	bob := nodes[0].addUser("bob", bobPW)
	waitAccount(t, nodes, alice)
	waitAccount(t, nodes, bob)
	for _, n := range nodes {
		waitFor(t, "push component on "+n.cluster.c.Name(), 20*time.Second, func() bool { return n.push.component.Connected() })
	}

	log := newPushLog(apns)
	a := xmpptest.Login(t, P.c2s(), "localhost", "alice", alicePW, "phone")
	a.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	smID := a.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") }).Get("id")
	log.register(t, a, alice)
	registered := func() bool {
		for _, n := range nodes {
			if devs, err := n.push.registry.List(); err != nil || len(devs) != 1 {
				return false
			}
		}
		d := P.devices(t, alice)
		return len(d) == 1 && d[0].Detached
	}
	_ = a.Conn.Close()
	waitFor(t, "alice hibernating, her registration on every node", 10*time.Second, registered)

	// Disabled at a node that is not her primary.
	other := nodes[0]
	if other == P {
		other = nodes[1]
	}
	flipped := time.Now()
	if out := pushCmd(t, other, "disable"); !strings.HasPrefix(out, "push disabled (version ") {
		t.Fatalf("pushd push disable printed %q", out)
	}
	waitFor(t, "the switch off on every node", time.Second, func() bool {
		for _, n := range nodes {
			if n.pushSwitch.Enabled() || metricAt(n, "pushd_push_enabled") != 0 {
				return false
			}
		}
		return true
	})
	t.Logf("O2: pushes off on all three nodes %v after the command", time.Since(flipped).Round(time.Millisecond))
	for _, n := range nodes {
		if st, err := adminOf(t, n).PushSwitch(); err != nil || st.Enabled || st.Node != other.cluster.c.Name() {
			t.Fatalf("GET /api/push/switch at %s: %+v, %v", n.cluster.c.Name(), st, err)
		}
	}

	// bob writes to her from each node in turn: each message is
	// acknowledged (durable and replicated, H2) and queued for her phone.
	var want []string
	for i, n := range nodes {
		b := xmpptest.Login(t, n.c2s(), "localhost", "bob", bobPW, fmt.Sprintf("desk%d", i))
		b.Send(`<enable xmlns='urn:xmpp:sm:3'/>`)
		b.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
		body := fmt.Sprintf("while off, via %s", n.cluster.c.Name())
		want = append(want, body)
		b.Send(fmt.Sprintf(`<message to='%s/phone' type='chat'><body>%s</body></message><r xmlns='urn:xmpp:sm:3'/>`, alice, body))
		b.Expect("ack", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") && e.Get("h") == "1" })
		_ = b.Conn.Close()
	}
	waitFor(t, "her messages queued and their pushes held back", 10*time.Second, func() bool {
		msgs, _ := P.queue.Stats(alice + "/phone")
		return msgs >= len(want) && metricAt(P, suppressedMessages) == float64(len(want))
	})
	if n := len(apns.Requests()); n != 0 {
		t.Fatalf("%d pushes reached APNS while the switch was off", n)
	}
	if !registered() {
		t.Fatal("registration or hibernating session lost while the switch was off")
	}

	if out := pushCmd(t, P, "enable"); !strings.HasPrefix(out, "push enabled (version ") {
		t.Fatalf("pushd push enable printed %q", out)
	}
	for _, n := range nodes {
		waitFor(t, "the switch on at "+n.cluster.c.Name(), time.Second, func() bool { return n.pushSwitch.Enabled() })
	}
	// Nothing is replayed; the next message pushes, with the whole summary.
	b := xmpptest.Login(t, other.c2s(), "localhost", "bob", bobPW, "desk")
	want = append(want, "after on")
	b.Send(fmt.Sprintf(`<message to='%s/phone' type='chat'><body>after on</body></message>`, alice))
	reqs := apns.WaitRequests(1, 10*time.Second)
	if len(reqs) != 1 {
		t.Fatalf("pushes after enabling: %+v, want one to her phone", reqs)
	}
	if dev, p, ok := log.open(reqs[0]); !ok || dev != alice || p.Type != payload.TypeMessage || p.Count != len(want) || p.Body != "after on" {
		t.Fatalf("the push after enabling: %+v (opened %v), want a summary of %d messages ending with the new one", p, ok, len(want))
	}
	if !registered() {
		t.Fatal("registration lost")
	}

	// Her phone resumes and gets each message once, in order.
	r, el := resumeAt(t, P, smID, 0)
	if !el.Is(stanza.NSSM, "resumed") {
		t.Fatalf("resume: %s", el)
	}
	got := bodiesUntilAck(t, r)
	if !slices.Equal(got, want) {
		t.Fatalf("alice got %q, want %q once, in order", got, want)
	}
}

// O2: the switch survives restarts. Turned off at a running node, it
// reads off from the data directory once the node stops (`pushd push
// status` with no node), and the node starts again with pushes off;
// turned on with no node running, the next start sends pushes.
func TestPushSwitchSurvivesRestart(t *testing.T) {
	n := startTestNode(t, nil)
	pushCmd(t, n, "disable")
	dir := n.cfg.DataDir
	n.stop()
	if out := pushCmd(t, n, "status"); !strings.HasPrefix(out, "push disabled (version ") {
		t.Fatalf("status from the data directory: %q", out)
	}
	again := startTestNode(t, func(c *fileConfig) { c.DataDir = dir })
	if again.pushSwitch.Enabled() || metricAt(again, "pushd_push_enabled") != 0 {
		t.Fatal("pushes on after a restart; the switch was off")
	}
	if st, err := adminOf(t, again).PushSwitch(); err != nil || st.Enabled || st.Version == 0 {
		t.Fatalf("GET /api/push/switch after the restart: %+v, %v", st, err)
	}
	again.stop()
	if out := pushCmd(t, again, "enable"); !strings.HasPrefix(out, "push enabled (version ") {
		t.Fatalf("enable in the data directory: %q", out)
	}
	third := startTestNode(t, func(c *fileConfig) { c.DataDir = dir })
	if !third.pushSwitch.Enabled() || metricAt(third, "pushd_push_enabled") != 1 {
		t.Fatal("pushes still off after pushd push enable with no node running")
	}
}

// O2 across membership: a member that was down while the switch flipped
// learns the newer state when it comes back (its own, older one, read
// from its disk, loses), and a member that joins later learns it too. A
// member that comes back with the newer state (changed in its data
// directory while it was down) gives it to the others: the newest wins
// whoever joins whom.
func TestPushSwitchReachesReturningAndNewMembers(t *testing.T) {
	nodes := clusterOf(t, 2, nil)
	n1, n2 := nodes[0], nodes[1]
	if _, err := adminOf(t, n1).SetPushSwitch(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the switch off at n2", time.Second, func() bool { return !n2.pushSwitch.Enabled() })

	dir := n2.cfg.DataDir
	n2.stop()
	waitFor(t, "n2 gone", 30*time.Second, func() bool {
		for _, m := range n1.cluster.c.Members() {
			if m.Name == "n2" && m.State.Live() {
				return false
			}
		}
		return true
	})
	on, err := adminOf(t, n1).SetPushSwitch(true)
	if err != nil {
		t.Fatalf("enabling with n2 down: %v", err)
	}
	back := startTestNode(t, func(c *fileConfig) {
		clusterMember(t, c, "n2", n1)
		c.DataDir = dir
	})
	waitFor(t, "n2, back, has the switch on", 30*time.Second, func() bool {
		st := back.pushSwitch.State()
		return st.Enabled && st.Version == on.Version && st.Node == "n1"
	})

	off, err := adminOf(t, back).SetPushSwitch(false)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the switch off at n1", time.Second, func() bool { return !n1.pushSwitch.Enabled() })
	late := startTestNode(t, func(c *fileConfig) { clusterMember(t, c, "n3", n1) })
	waitFor(t, "n3, new, has the switch off", 30*time.Second, func() bool {
		st := late.pushSwitch.State()
		return !st.Enabled && st.Version == off.Version && st.Node == "n2"
	})
	if out := pushCmd(t, late, "status"); !strings.HasPrefix(out, "push disabled (version ") || !strings.Contains(out, " by n2 ") {
		t.Fatalf("pushd push status at n3: %q", out)
	}

	back.stop()
	pushCmd(t, back, "enable")
	newest := startTestNode(t, func(c *fileConfig) {
		clusterMember(t, c, "n2", n1)
		c.DataDir = dir
	})
	for _, n := range []*testNode{n1, late} {
		waitFor(t, "the newer switch from n2's disk at "+n.cluster.c.Name(), 30*time.Second, func() bool {
			return n.pushSwitch.Enabled() && n.pushSwitch.State() == newest.pushSwitch.State()
		})
	}
}
