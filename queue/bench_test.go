package queue

import (
	"fmt"
	"sync/atomic"
	"testing"

	"pushd/internal/stanza"
	"pushd/internal/store"
	"pushd/jsm"
)

var policies = []store.SyncPolicy{store.SyncAlways, store.SyncBatch, store.SyncOS}

// benchEntry is a typical chat message as a suspended phone would queue it.
func benchEntry(seq uint64) jsm.Entry {
	e := stanza.New(stanza.NSClient, "message",
		"from", "romeo@example.test/balcony", "to", "juliet@example.test/phone",
		"type", "chat", "id", fmt.Sprintf("5f3a%012d", seq))
	e.Add(
		stanza.New(stanza.NSClient, "body").AddText("Art thou not Romeo, and a Montague? Neither, fair maid, if either thee dislike."),
		stanza.New("urn:xmpp:receipts", "request"),
		stanza.New("urn:xmpp:sid:0", "stanza-id", "by", "juliet@example.test", "id", fmt.Sprint(seq)),
	)
	return jsm.Entry{Seq: seq, Stanza: e}
}

func benchStore(b *testing.B, pol store.SyncPolicy) *Store {
	dir := b.TempDir()
	db := openDB(b, dir)
	cfg := DefaultConfig()
	cfg.Sync = pol
	// The bounds are not what is measured.
	cfg.MaxEntries = 1 << 30
	cfg.MaxBytes = 1 << 40
	s, err := New(db.Badger(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = s.Close()
		_ = db.Close()
	})
	return s
}

// bytesPerStanza is what one queued stanza costs in key and value bytes.
func bytesPerStanza(s *Store) float64 {
	var n, bytes int64
	for _, d := range s.Devices() {
		n += int64(d.Count)
		bytes += d.Bytes + int64(d.Count)*int64(len(d.Device)+2+8)
	}
	if n == 0 {
		return 0
	}
	return float64(bytes) / float64(n)
}

// BenchmarkAppend: one writer, one stanza per Append, durable per policy.
func BenchmarkAppend(b *testing.B) {
	for _, pol := range policies {
		b.Run(pol.String(), func(b *testing.B) {
			s := benchStore(b, pol)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dev := fmt.Sprintf("juliet%d@example.test/phone", i%64)
				if err := s.Append(dev, []jsm.Entry{benchEntry(uint64(i))}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			b.ReportMetric(bytesPerStanza(s), "bytes/stanza")
		})
	}
}

// BenchmarkAppendParallel: many writers (as many c2s streams delivering to
// suspended devices), where group commit pays.
func BenchmarkAppendParallel(b *testing.B) {
	for _, pol := range policies {
		b.Run(pol.String(), func(b *testing.B) {
			s := benchStore(b, pol)
			var writers, seq atomic.Uint64
			b.SetParallelism(32) // 64 goroutines on 2 cores
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				dev := fmt.Sprintf("juliet%d@example.test/phone", writers.Add(1))
				for pb.Next() {
					if err := s.Append(dev, []jsm.Entry{benchEntry(seq.Add(1))}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			b.ReportMetric(float64(b.N)/float64(s.commits.Load()), "appends/commit")
			b.ReportMetric(bytesPerStanza(s), "bytes/stanza")
		})
	}
}

// BenchmarkRead: flushing a queue back (decode included).
func BenchmarkRead(b *testing.B) {
	s := benchStore(b, store.SyncOS)
	const dev, n = "juliet@example.test/phone", 1000
	es := make([]jsm.Entry, n)
	for i := range es {
		es[i] = benchEntry(uint64(i + 1))
	}
	if err := s.Append(dev, es); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Read(dev, 0, func(jsm.Entry) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "stanzas/s")
}
