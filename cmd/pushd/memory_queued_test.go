package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"
)

// TestMemoryPerQueuedSession runs the measurement behind `pushd bench c2s
// --queued` on a small in-process node and checks that it measures what
// it says: every session is hibernated and holds exactly the queued
// messages, none bounced, when the second sample is taken. The figures
// themselves (meaningless at this size) are only logged.
func TestMemoryPerQueuedSession(t *testing.T) {
	const sessions, queued = 20, 10
	var counts []int
	start := func(_ context.Context, users int) (c2sTarget, func(), error) {
		n := startTestNode(t, func(c *fileConfig) { c.C2S.RateLimit = 0; c.Log.Level = "warn" })
		for i := range users {
			n.addUser(fmt.Sprintf("bench%d", i), "bench-pw")
		}
		tg := c2sTarget{Name: "pushd", Addr: n.c2s(), Domain: "localhost", PID: os.Getpid(), Pattern: "bench%d", Password: "bench-pw",
			Live: func() (int64, error) {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return int64(ms.HeapInuse + ms.StackInuse), nil
			}}
		stop := func() {
			counts = counts[:0]
			for i := range sessions {
				for _, d := range n.devices(t, fmt.Sprintf("bench%d@localhost", i)) {
					if d.Detached {
						counts = append(counts, d.QueuedCount)
					}
				}
			}
			n.stop()
		}
		return tg, stop, nil
	}
	m, err := measureSessions(context.Background(), start, sessions, true, queued)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("per session: hibernated %.1f KiB, with %d queued %.1f KiB (live); fill %+v", m.live/1024, queued, m.liveQueued/1024, m.fill)
	if m.fill.Sent != sessions*queued || m.fill.Bounced != 0 {
		t.Errorf("fill sent %d (want %d), bounced %d", m.fill.Sent, sessions*queued, m.fill.Bounced)
	}
	if len(counts) != sessions {
		t.Fatalf("%d hibernated sessions at the end, want %d", len(counts), sessions)
	}
	// Plus, in each queue, the session's own presence that the server
	// echoed just before the drop and that was never acknowledged (the
	// bench client does not ack): it is queued like anything unacked.
	for i, c := range counts {
		if c != queued && c != queued+1 {
			t.Errorf("session %d holds %d queued stanzas, want %d (+1 unacked presence)", i, c, queued)
		}
	}
}
