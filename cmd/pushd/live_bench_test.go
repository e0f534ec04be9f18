package main

import (
	"fmt"
	"testing"

	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// BenchmarkLiveDelivery measures acknowledged messages/s to connected
// receivers, with and without XEP-0198 on the receivers' streams: with it,
// everything written to them is queued until they acknowledge it (H2,
// jsm.Managed), and each sender's acknowledgement waits for that write.
// 10 senders each write to their own receiver, which reads, counts and
// answers every <r/>; 32 messages between acknowledgement requests.
func BenchmarkLiveDelivery(b *testing.B) {
	for _, sm := range []bool{false, true} {
		b.Run(fmt.Sprintf("receiver-sm=%t", sm), func(b *testing.B) {
			const pairs, window = 10, 32
			n := startTestNode(b, func(c *fileConfig) {
				c.C2S.RateLimit = 0
				c.Log.Level = "warn"
			})
			for i := range pairs {
				n.addUser(fmt.Sprintf("rcv%d", i), "pw")
				n.addUser(fmt.Sprintf("snd%d", i), "pw")
			}
			for i := range pairs {
				r := xmpptest.Login(b, n.c2s(), "localhost", fmt.Sprintf("rcv%d", i), "pw", "phone")
				if sm {
					r.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
					r.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
				}
				go func() { // a client that reads everything and acknowledges when asked
					h := 0
					for {
						el, err := r.Next()
						if err != nil {
							return
						}
						if el.IsStanza() {
							h++
						} else if el.Is(stanza.NSSM, "r") {
							if r.TrySend(fmt.Sprintf(`<a xmlns='urn:xmpp:sm:3' h='%d'/>`, h)) != nil {
								return
							}
						}
					}
				}()
			}
			senders := make([]*xmpptest.Client, pairs)
			var to []string
			for i := range senders {
				senders[i] = xmpptest.Login(b, n.c2s(), "localhost", fmt.Sprintf("snd%d", i), "pw", "desk")
				senders[i].Send(`<enable xmlns='urn:xmpp:sm:3'/>`)
				senders[i].Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
				to = append(to, fmt.Sprintf("rcv%d@localhost/phone", i))
			}
			benchAcked(b, senders, to, window)
		})
	}
}
