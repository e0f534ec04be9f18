package main

import (
	"fmt"
	"testing"
	"time"

	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// BenchmarkReplicatedDelivery is BenchmarkSuspendedDelivery on a cluster
// of two nodes: each message to a suspended device is acknowledged to its
// sender only once the device's primary made it durable AND its backup
// holds it (H2). Senders and devices are placed on the node that is their
// primary, so that nothing is forwarded: the figure is the cost of
// replication alone. b.N is messages per sender.
func BenchmarkReplicatedDelivery(b *testing.B) {
	const pairs, window = 10, 32
	nodes := clusterOf(b, 2, func(_ int, c *fileConfig) {
		c.C2S.RateLimit = 0
		c.Log.Level = "warn"
		c.Queue.MaxEntries = 1 << 30
		c.Queue.MaxBytes = 1 << 40
	})
	place := nodes[0].cluster.c.Placement()
	home := func(user string) *testNode { return byName(nodes, place.Primary(user+"@localhost")) }
	// Pair i: a receiver and a sender with the same primary.
	var rcv, snd []string
	for i := 0; len(rcv) < pairs; i++ {
		r, s := fmt.Sprintf("rcv%d", i), fmt.Sprintf("snd%d", i)
		if home(r) != home(s) {
			continue
		}
		nodes[0].addUser(r, "pw")
		nodes[0].addUser(s, "pw")
		rcv, snd = append(rcv, r), append(snd, s)
	}
	for _, n := range nodes {
		waitFor(b, "accounts everywhere", 20*time.Second, func() bool {
			l, _ := n.db.Accounts().List()
			return len(l) == 2*pairs
		})
	}
	for _, r := range rcv {
		c := xmpptest.Login(b, home(r).c2s(), "localhost", r, "pw", "phone")
		c.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
		c.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
		_ = c.Conn.Close()
	}
	for _, r := range rcv {
		user := r + "@localhost"
		waitFor(b, user+" hibernating", 20*time.Second, func() bool {
			d := home(r).devices(b, user)
			return len(d) == 1 && d[0].Detached
		})
	}
	senders := make([]*xmpptest.Client, pairs)
	for i, s := range snd {
		senders[i] = xmpptest.Login(b, home(s).c2s(), "localhost", s, "pw", "desk")
		senders[i].Send(`<enable xmlns='urn:xmpp:sm:3'/>`)
		senders[i].Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	}
	var to []string
	for _, r := range rcv {
		to = append(to, r+"@localhost/phone")
	}
	benchAcked(b, senders, to, window)
}
