package main

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// BenchmarkSuspendedDelivery measures messages/s into the durable queues
// of suspended devices, each acknowledged to its sender only once durable
// (DESIGN rule 2), for each [storage] sync policy: "os" is the cost of
// the acknowledgement path without fsync, "batch" with group commit.
// b.N is messages per sender; 10 senders each write to their own
// suspended receiver, 32 messages between acknowledgement requests.
func BenchmarkSuspendedDelivery(b *testing.B) {
	for _, policy := range []string{"os", "batch", "always"} {
		b.Run("sync="+policy, func(b *testing.B) {
			const pairs, window = 10, 32
			n := startTestNode(b, func(c *fileConfig) {
				c.C2S.RateLimit = 0
				c.Storage.Sync = policy
				c.Log.Level = "warn"
				c.Queue.MaxEntries = 1 << 30
				c.Queue.MaxBytes = 1 << 40
			})
			for i := range pairs {
				n.addUser(fmt.Sprintf("rcv%d", i), "pw")
				n.addUser(fmt.Sprintf("snd%d", i), "pw")
			}
			for i := range pairs {
				r := xmpptest.Login(b, n.c2s(), "localhost", fmt.Sprintf("rcv%d", i), "pw", "phone")
				r.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/><presence/>`)
				r.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
				_ = r.Conn.Close()
			}
			for i := range pairs {
				user := fmt.Sprintf("rcv%d@localhost", i)
				waitFor(b, user+" hibernating", 20*time.Second, func() bool {
					d := n.devices(b, user)
					return len(d) == 1 && d[0].Detached
				})
			}
			senders := make([]*xmpptest.Client, pairs)
			for i := range senders {
				senders[i] = xmpptest.Login(b, n.c2s(), "localhost", fmt.Sprintf("snd%d", i), "pw", "desk")
				senders[i].Send(`<enable xmlns='urn:xmpp:sm:3'/>`)
				senders[i].Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
			}
			var to []string
			for i := range pairs {
				to = append(to, fmt.Sprintf("rcv%d@localhost/phone", i))
			}
			benchAcked(b, senders, to, window)
		})
	}
}

// benchAcked times sender i writing b.N messages to to[i], all senders at
// once, each acknowledged (sendAcked), and reports acked messages/s.
func benchAcked(b *testing.B, senders []*xmpptest.Client, to []string, window int) {
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sendAcked(s, to[i], b.N, window); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(len(senders)*b.N)/time.Since(start).Seconds(), "acked-msgs/s")
}

// sendAcked sends n chat messages to to, window at a time, each window
// closed by <r/>, and returns once the server acknowledged all n.
func sendAcked(s *xmpptest.Client, to string, n, window int) error {
	sent := 0
	for sent < n {
		var batch strings.Builder
		for k := 0; k < window && sent < n; k++ {
			fmt.Fprintf(&batch, `<message to='%s' type='chat'><body>queued %d</body></message>`, to, sent)
			sent++
		}
		batch.WriteString(`<r xmlns='urn:xmpp:sm:3'/>`)
		if err := s.TrySend(batch.String()); err != nil {
			return err
		}
		for {
			el, err := s.Next()
			if err != nil {
				return err
			}
			if el.Is(stanza.NSSM, "a") {
				if h, _ := strconv.Atoi(el.Get("h")); h >= sent {
					break
				}
			}
		}
	}
	return nil
}
