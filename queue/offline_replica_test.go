package queue

import (
	"slices"
	"testing"

	"pushd/internal/stanza"
	"pushd/jsm"
)

// A backup's copy of an offline store (H2): messages are kept under the
// primary's numbers, once however often they are applied, trimmed up to a
// number, and a store that took some over numbers its own after them.
func TestOfflineReplica(t *testing.T) {
	db := openDB(t, t.TempDir())
	s, err := New(db.Badger(), DefaultConfig())
	must(t, err)
	const u = "u@example.test"
	bodies := func(es []jsm.Entry) (out []string) {
		for _, e := range es {
			out = append(out, e.Stanza.ChildText(stanza.NSClient, "body"))
		}
		return out
	}
	far := uint64(1) << 62 // numbers from a primary whose clock is far ahead
	add := []jsm.Entry{{Seq: far + 1, Stanza: msg(1, "m1").Stanza}, {Seq: far + 2, Stanza: msg(2, "m2").Stanza}}
	must(t, s.PutOfflineAsync(u, add)())
	must(t, s.PutOfflineAsync(u, add[1:])()) // a replay
	got, err := s.ReadOffline(u)
	must(t, err)
	if !slices.Equal(bodies(got), []string{"m1", "m2"}) || got[0].Seq != far+1 {
		t.Fatalf("after put and replay: %v", bodies(got))
	}
	seq, wait := s.StoreOfflineAsync(u, msg(3, "m3").Stanza)
	must(t, wait())
	if seq <= far+2 {
		t.Errorf("own number %d not after the replicated %d", seq, far+2)
	}
	must(t, s.TrimOfflineAsync(u, far+1)())
	must(t, s.StoreOffline("v@example.test", msg(9, "other").Stanza))
	if counts, err := s.OfflineCounts(); err != nil || counts[u] != 2 || counts["v@example.test"] != 1 || len(counts) != 2 {
		t.Errorf("OfflineCounts = %v, %v; want %s 2, v 1", counts, err, u)
	}
	must(t, s.DropOffline("v@example.test"))
	msgs, through, err := s.TakeOffline(u)
	must(t, err)
	if len(msgs) != 2 || through != seq {
		t.Fatalf("TakeOffline = %d messages through %d, want 2 through %d", len(msgs), through, seq)
	}

	// After a restart the numbers still follow every one stored.
	must(t, s.PutOfflineAsync(u, []jsm.Entry{{Seq: far + 10, Stanza: msg(4, "m4").Stanza}})())
	must(t, s.Close())
	s, err = New(db.Badger(), DefaultConfig())
	must(t, err)
	t.Cleanup(func() { _ = s.Close() })
	if seq, wait := s.StoreOfflineAsync(u, msg(5, "m5").Stanza); wait() != nil || seq <= far+10 {
		t.Errorf("number after restart %d, want > %d", seq, far+10)
	}
	must(t, s.TrimOfflineAsync(u, ^uint64(0))())
	if n, _ := s.CountOffline(u); n != 0 {
		t.Errorf("trim through the last number left %d", n)
	}
}
