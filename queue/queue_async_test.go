package queue

import (
	"testing"

	"pushd/internal/stanza"
	"pushd/jsm"
)

// A read right after an asynchronous append sees the append, and
// asynchronous ops commit in submission order (the router submits under
// its lock and waits outside it).
func TestAsyncOrderAndReadBarrier(t *testing.T) {
	s := newStore(t, DefaultConfig())
	pres := func(seq uint64) jsm.Entry {
		return jsm.Entry{Seq: seq, Stanza: stanza.New(stanza.NSClient, "presence")}
	}
	var waits []func() error
	waits = append(waits, s.AppendAsync("d", []jsm.Entry{msg(1, "a"), pres(2), msg(3, "b"), pres(4)}))
	waits = append(waits, s.RemoveAsync("d", []uint64{2}))
	waits = append(waits, s.TrimAsync("d", 1))
	var got []uint64
	if err := s.Read("d", 0, func(e jsm.Entry) error { got = append(got, e.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Fatalf("read after async ops = %v, want [3 4]", got)
	}
	for _, w := range waits {
		if err := w(); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := s.Stats("d"); n != 2 {
		t.Errorf("count = %d, want 2", n)
	}
	if err := s.Remove("d", []uint64{3, 4, 99}); err != nil {
		t.Fatal(err)
	}
	if n, b := s.Stats("d"); n != 0 || b != 0 {
		t.Errorf("after removing all: %d entries, %d bytes", n, b)
	}
}
