package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"pushd/cluster"
	"pushd/component/payload"
	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// H2's detection window as issue 11's observation 1 saw it: three pushd
// processes, alice's phone hibernated with pushd's own push component,
// her primary killed with SIGKILL; messages sent at once after the kill,
// from a sender homed on her backup and one on the third node, are
// acknowledged, pushed by the new primary, and come on resumption there
// after the earlier five, once each. (The chaos test sends through the
// whole window from every survivor.)
func TestDetectionWindowProcesses(t *testing.T) {
	provider, procs, byProc := threePushProcs(t)
	place := cluster.NewPlacement([]string{"n1", "n2", "n3"})
	pName, bName := place.PrimaryBackup("alice@localhost")
	P, B := byProc[pName], byProc[bName]
	adm := procs[0].admin(t)
	check(t, adm.AddUser("alice", "pw"))
	var senders []string // one homed on each survivor
	for _, home := range []string{bName, otherThan(pName, bName)} {
		for i := 0; ; i++ {
			u := fmt.Sprintf("snd%d", i)
			if place.Primary(u+"@localhost") == home && !slices.Contains(senders, u) {
				check(t, adm.AddUser(u, "pw"))
				senders = append(senders, u)
				break
			}
		}
	}
	for _, p := range procs {
		waitFor(t, "accounts on "+p.name, 30*time.Second, func() bool {
			l, err := p.admin(t).ListUsers()
			return err == nil && len(l) == 1+len(senders)
		})
	}
	pushes := newPushLog(provider.Server)
	a := xmpptest.Login(t, P.c2s, "localhost", "alice", "pw", "phone")
	a.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	smID := a.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") }).Get("id")
	pushes.register(t, a, "alice")
	a.Send(`<presence/>`)
	_ = a.Conn.Close()
	waitFor(t, "alice hibernating", 20*time.Second, func() bool { return P.metric("pushd_streams_detached") == 1 })

	var clients []*xmpptest.Client
	for _, u := range senders {
		c := xmpptest.Login(t, byProc[place.Primary(u+"@localhost")].c2s, "localhost", u, "pw", "desk")
		c.Send(`<enable xmlns='urn:xmpp:sm:3'/>`)
		c.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
		clients = append(clients, c)
	}
	var want []string
	send := func(c *xmpptest.Client, h int, bodies ...string) {
		var b strings.Builder
		for _, body := range bodies {
			fmt.Fprintf(&b, `<message to='alice@localhost' type='chat'><body>%s</body></message>`, body)
		}
		b.WriteString(`<r xmlns='urn:xmpp:sm:3'/>`)
		c.Send(b.String())
		c.Expect("ack of "+bodies[0], func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") && e.Get("h") == strconv.Itoa(h) })
		want = append(want, bodies...)
	}
	send(clients[0], 5, "before 0", "before 1", "before 2", "before 3", "before 4")

	check(t, P.proc.Cmd.Process.Signal(syscall.SIGKILL))
	<-P.proc.Done()
	killed := time.Now()
	firstPush := pushes.first(killed, func(dev string) bool { return dev == "alice" },
		func(p payload.Payload) bool { return p.Node == B.c2s })
	// Both senders write at once, in the detection window: one homed on
	// the backup, one on the third node.
	send(clients[0], 6, "window b")
	send(clients[1], 1, "window s")
	select {
	case f := <-firstPush:
		t.Logf("first push from the new primary %v after SIGKILL", f.at.Sub(killed).Round(10*time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("M3/H3: no push from the new primary for the window's messages")
	}
	r := xmpptest.Dial(t, B.c2s, "localhost")
	r.StartTLS()
	if cond := r.AuthPlain("alice", "pw"); cond != "" {
		t.Fatal(cond)
	}
	r.Send(`<resume xmlns='urn:xmpp:sm:3' h='0' previd='` + smID + `'/><iq type='get' id='end'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if el := r.Expect("resumed", func(e *stanza.Element) bool { return e.Name.Space == stanza.NSSM }); !el.Is(stanza.NSSM, "resumed") {
		t.Fatalf("M5: alice did not resume on the new primary: %s", el)
	}
	var got []string
	r.Expect("ping", func(e *stanza.Element) bool {
		if e.Is(stanza.NSClient, "message") {
			got = append(got, e.ChildText(stanza.NSClient, "body"))
		}
		return e.Get("id") == "end"
	})
	if !slices.Equal(got[:min(5, len(got))], want[:5]) || len(got) != len(want) || !slices.Contains(got, "window b") || !slices.Contains(got, "window s") {
		t.Fatalf("H2/M5: alice's resumption brought %q, want %q once each, the first five first", got, want)
	}
}

// otherThan names the member of n1–n3 that is neither a nor b.
func otherThan(a, b string) string {
	for _, n := range []string{"n1", "n2", "n3"} {
		if n != a && n != b {
			return n
		}
	}
	return ""
}

// A paused primary learns from the others' handover that they took its
// users over (the handover opens with a taken-over record; nothing is read
// from memberlist's log): what it held of them is stale and forgotten.
// alice's primary is stopped (SIGSTOP) past failure detection; meanwhile
// she logs in on her new primary and logs out cleanly, which removes her
// push registration (M8); her primary continues (SIGCONT) and serves her
// again: a message to her now is kept offline, not pushed to the device
// she logged out of, and reaches her next login once.
func TestPausedPrimaryForgetsWhatWasTakenOver(t *testing.T) {
	provider, procs, byProc := threePushProcs(t)
	all := cluster.NewPlacement([]string{"n1", "n2", "n3"})
	var alice string
	for i := 0; alice == ""; i++ {
		if u := fmt.Sprintf("alice%d", i); all.Primary(u+"@localhost") == "n3" {
			alice = u
		}
	}
	bob := ""
	for i := 0; bob == ""; i++ {
		if u := fmt.Sprintf("bob%d", i); all.Primary(u+"@localhost") == "n1" {
			bob = u
		}
	}
	adm := procs[0].admin(t)
	check(t, adm.AddUser(alice, "pw"))
	check(t, adm.AddUser(bob, "pw"))
	for _, p := range procs {
		waitFor(t, "accounts on "+p.name, 30*time.Second, func() bool {
			l, err := p.admin(t).ListUsers()
			return err == nil && len(l) == 2
		})
	}
	paused := byProc["n3"]
	heir := byProc[cluster.NewPlacement([]string{"n1", "n2"}).Primary(alice+"@localhost")]
	pushes := newPushLog(provider.Server)
	a := xmpptest.Login(t, paused.c2s, "localhost", alice, "pw", "phone")
	a.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	a.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	pushes.register(t, a, alice)
	a.Send(`<presence/>`)
	_ = a.Conn.Close()
	waitFor(t, "alice hibernating on her primary", 20*time.Second, func() bool { return paused.metric("pushd_streams_detached") == 1 })

	check(t, syscall.Kill(paused.proc.PID(), syscall.SIGSTOP))
	waitFor(t, "her new primary to take her phone over", 30*time.Second, func() bool { return heir.metric("pushd_streams_detached") == 1 })
	// She comes back there on the same resource and logs out cleanly.
	back := xmpptest.Login(t, heir.c2s, "localhost", alice, "pw", "phone")
	back.Send(`<presence/></stream:stream>`)
	for {
		if _, err := back.Next(); err != nil {
			break
		}
	}
	waitFor(t, "her logout on her new primary", 20*time.Second, func() bool { return heir.metric("pushd_streams_bound") == 0 })
	check(t, syscall.Kill(paused.proc.PID(), syscall.SIGCONT))
	waitFor(t, "the cluster to converge after the pause", 60*time.Second, func() bool {
		raw, err := procs[0].admin(t).ClusterStatus()
		w, werr := procs[0].admin(t).Where(alice)
		return err == nil && werr == nil && strings.Count(string(raw), `"alive"`) == 3 && w.Primary == "n3" && paused.metric("pushd_cluster_syncing") == 0
	})

	from := pushes.len()
	b := xmpptest.Login(t, byProc["n1"].c2s, "localhost", bob, "pw", "desk")
	b.Send(`<enable xmlns='urn:xmpp:sm:3'/>`)
	b.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	b.Send(fmt.Sprintf(`<message to='%s@localhost' type='chat'><body>after the pause</body></message><r xmlns='urn:xmpp:sm:3'/>`, alice))
	b.Expect("ack", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") && e.Get("h") == "1" })
	c := xmpptest.Login(t, paused.c2s, "localhost", alice, "pw", "laptop")
	c.Send(`<presence/>`)
	c.Expect("M10: the message kept for her next login", func(e *stanza.Element) bool {
		return e.ChildText(stanza.NSClient, "body") == "after the pause"
	})
	if n := pushes.len() - from; n != 0 {
		t.Fatalf("M8: %d pushes to the device alice logged out of while her primary was paused", n)
	}
}

// threePushProcs starts pushd processes n1–n3 in one cluster, their push
// components on one APNS test server, and waits until they see each other
// alive; clients wait up to 30 s (a failover's stalled stanzas).
func threePushProcs(t *testing.T) (*apnsProvider, []*clusterProc, map[string]*clusterProc) {
	t.Helper()
	old := xmpptest.Timeout
	xmpptest.Timeout = 30 * time.Second
	t.Cleanup(func() { xmpptest.Timeout = old })
	provider := testAPNS(t)
	procs := startClusterProcs(t, provider.section(), "n1", "n2", "n3")
	byProc := map[string]*clusterProc{}
	for _, p := range procs {
		byProc[p.name] = p
	}
	waitFor(t, "three members", 30*time.Second, func() bool {
		raw, err := procs[0].admin(t).ClusterStatus()
		return err == nil && strings.Count(string(raw), `"alive"`) == 3
	})
	return provider, procs, byProc
}
