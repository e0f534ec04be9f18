package sip

import (
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"pushd/component/dispatch"
	"pushd/component/payload"
)

// answers reads what comes back for a set of calls, ACKing finals, until
// done says enough or d passes: every response code by Call-ID, a
// retransmitted final once.
type answers map[string][]int

func (a answers) final(id string) int {
	for _, c := range a[id] {
		if c >= 200 {
			return c
		}
	}
	return 0
}

func (a answers) has(id string, code int) bool {
	for _, c := range a[id] {
		if c == code {
			return true
		}
	}
	return false
}

func (p *peer) collect(a answers, d time.Duration, done func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for !done() {
		m := p.next(time.Until(deadline))
		if m == nil {
			return
		}
		res, ok := m.(*sip.Response)
		if !ok || res.CallID() == nil {
			continue
		}
		id := res.CallID().Value()
		if res.StatusCode >= 200 {
			if res.CSeq().MethodName == sip.INVITE {
				p.send(ackFor(res))
			}
			if a.final(id) != 0 {
				continue
			}
		}
		a[id] = append(a[id], int(res.StatusCode))
	}
}

// busyPhone answers every INVITE it gets with 486, as a desk phone in a
// call would: a final response pushd relays.
func busyPhone(p *peer) {
	for {
		select {
		case m := <-p.in:
			req, ok := m.(*sip.Request)
			if !ok || req.Method != sip.INVITE {
				continue
			}
			res := sip.NewResponseFromRequest(req, 486, "Busy Here", nil)
			res.To().Params.Add("tag", "busy")
			if _, err := p.conn.Write([]byte(res.String())); err != nil {
				return
			}
		case <-p.closed:
			return
		}
	}
}

func callPushes(jobs []dispatch.Job) int {
	n := 0
	for _, j := range jobs {
		if j.Payload.Type == payload.TypeCall {
			n++
		}
	}
	return n
}

// Regression test of 90ac95f (C3, C4): INVITEs in flight at once, for the
// same AOR and for different ones, each get their answer. Before that
// fix the runner's forgetEnded released the context of a call whose
// Invite was still queued behind another call's step, and that caller
// heard nothing ever again. Every round sends, all at once, calls for a
// sleeping phone (pushed, 180 at 5 s, 480 at 13 s), for a user without
// bindings (480 at once) and for a busy desk phone (486 relayed).
func TestConcurrentInvitesAllAnswered(t *testing.T) {
	w := startWorld(t, func(c *Config) {
		c.Trusted = loopback()
		c.RequestBurst = 1e6
	})
	w.bind(t, "alice", "sip:alice@127.0.0.1:9", &PushParams{Provider: dispatch.APNS,
		PRID: strings.Repeat("ab", 32), Param: "TEAM1234.com.example.app.voip"})
	phone := dialPeer(t, "udp", w.addr())
	go busyPhone(phone)
	w.bind(t, "carol", "sip:carol@"+phone.local, nil)
	caller := dialPeer(t, "udp", w.addr())

	const rounds, each = 25, 3
	for round := range rounds {
		var held, nobody, busy []string
		var batch []message
		for range each {
			h, n, b := caller.invite("alice"), caller.invite("dave"), caller.invite("carol")
			held, nobody, busy = append(held, h.get("Call-ID")), append(nobody, n.get("Call-ID")), append(busy, b.get("Call-ID"))
			batch = append(batch, h, n, b)
		}
		for _, m := range batch {
			caller.send(m.String())
		}
		a := answers{}
		all := func(ids []string, ok func(string) bool) func() bool {
			return func() bool {
				for _, id := range ids {
					if !ok(id) {
						return false
					}
				}
				return true
			}
		}
		finals := all(append(append([]string(nil), nobody...), busy...), func(id string) bool { return a.final(id) != 0 })
		caller.collect(a, 3*time.Second, finals)
		for _, id := range nobody {
			if got := a.final(id); got != 480 {
				t.Fatalf("round %d: call for a user without bindings answered %v, want 480", round, a[id])
			}
		}
		for _, id := range busy {
			if got := a.final(id); got != 486 {
				t.Fatalf("round %d: call for the busy phone answered %v, want 486 relayed", round, a[id])
			}
		}
		waitFor(t, "a call push for every held call", func() bool { return callPushes(w.pusher.Jobs()) == (round+1)*each })
		w.tick(5 * time.Second)
		caller.collect(a, 3*time.Second, all(held, func(id string) bool { return a.has(id, 180) }))
		w.tick(8 * time.Second)
		caller.collect(a, 3*time.Second, all(held, func(id string) bool { return a.final(id) != 0 }))
		for _, id := range held {
			if !a.has(id, 180) || a.final(id) != 480 {
				t.Fatalf("round %d: held call heard %v, want 180 then 480", round, a[id])
			}
		}
	}
}

// waitFor polls cond for up to 5 s (I/O finishing, never pushd's timers).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
