package queue

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	crecord "pushd/cluster/record"
	"pushd/internal/stanza"
	"pushd/jsm"
)

// decoded is what a record decodes to, in one comparable form.
type decoded struct {
	key     string
	through uint64
	seqs    []uint64
	entries []string // "seq:stanza"
}

func entryStrings(es []jsm.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%d:%s", e.Seq, stanza.Marshal(e.Stanza, stanza.NSClient)))
	}
	return out
}

func decodeAny(r crecord.Record) (decoded, error) {
	var d decoded
	var err error
	var es []jsm.Entry
	switch r.Kind {
	case KindAppend:
		d.key, es, err = DecodeAppend(r)
	case KindOfflineAdd:
		d.key, es, err = DecodeOfflineAdd(r)
	case KindTrim:
		d.key, d.through, err = DecodeTrim(r)
	case KindOfflineTrim:
		d.key, d.through, err = DecodeOfflineTrim(r)
	case KindRemove:
		d.key, d.seqs, err = DecodeRemove(r)
	case KindDrop:
		d.key, err = DecodeDrop(r)
	default:
		return d, fmt.Errorf("kind %d", r.Kind)
	}
	d.entries = entryStrings(es)
	return d, err
}

func TestRecordCodecs(t *testing.T) {
	const dev, user = "a@example.test/phone", "a@example.test"
	entries := []jsm.Entry{msg(1, "m1"), pres(7), msg(1<<40, "<&>")}
	for _, tc := range []struct {
		name string
		rec  crecord.Record
		kind crecord.Kind
		want decoded
	}{
		{"append", AppendRecord(dev, entries), KindAppend, decoded{key: dev, entries: entryStrings(entries)}},
		{"append none", AppendRecord(dev, nil), KindAppend, decoded{key: dev}},
		{"trim", TrimRecord(dev, 1<<40), KindTrim, decoded{key: dev, through: 1 << 40}},
		{"remove", RemoveRecord(dev, []uint64{3, 4, 9}), KindRemove, decoded{key: dev, seqs: []uint64{3, 4, 9}}},
		{"drop", DropRecord(dev), KindDrop, decoded{key: dev}},
		{"offline add", OfflineAddRecord(user, entries[:1]), KindOfflineAdd, decoded{key: user, entries: entryStrings(entries[:1])}},
		{"offline trim all", OfflineTrimRecord(user, ^uint64(0)), KindOfflineTrim, decoded{key: user, through: ^uint64(0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.rec.Kind != tc.kind {
				t.Fatalf("kind %d, want %d", tc.rec.Kind, tc.kind)
			}
			// Through the wire encoding, and with fields a later revision
			// appended, which this one ignores.
			wire, rest, err := crecord.Decode(crecord.Append(nil, tc.rec))
			if err != nil || len(rest) != 0 {
				t.Fatal(err, rest)
			}
			later := wire
			later.Body = append(slices.Clip(wire.Body), 0x05, 'e', 'x', 't', 'r', 'a')
			for _, r := range []crecord.Record{wire, later} {
				got, err := decodeAny(r)
				if err != nil {
					t.Fatal(err)
				}
				if got.key != tc.want.key || got.through != tc.want.through || !slices.Equal(got.seqs, tc.want.seqs) ||
					!slices.Equal(got.entries, tc.want.entries) {
					t.Fatalf("got %+v, want %+v", got, tc.want)
				}
			}
			// A truncated body is refused, never misread.
			for i := range len(tc.rec.Body) {
				cut := tc.rec
				cut.Body = tc.rec.Body[:i]
				if _, err := decodeAny(cut); err == nil {
					t.Fatalf("body cut at %d of %d decoded", i, len(tc.rec.Body))
				}
			}
		})
	}
}

func TestRecordDecodeRefusesOtherKind(t *testing.T) {
	if _, _, err := DecodeTrim(OfflineTrimRecord("u", 1)); !errors.Is(err, crecord.ErrKind) {
		t.Fatalf("offline trim read as a queue trim: %v", err)
	}
	// A huge count in a small body must not allocate.
	evil := crecord.Record{Kind: KindRemove, Key: "d", Body: []byte{0xff, 0xff, 0xff, 0xff, 0x0f}}
	if _, _, err := DecodeRemove(evil); err == nil {
		t.Fatal("hostile count accepted")
	}
}

// What a backup does with the records (H2): appends are idempotent by
// (device, seq), trims and drops follow.
func TestApplyRecords(t *testing.T) {
	s := newStore(t, DefaultConfig())
	const dev = "a@example.test/phone"
	apply := func(f func(string, crecord.Record) (func() error, error), r crecord.Record) {
		t.Helper()
		w, err := f("primary", r)
		must(t, err)
		must(t, w())
	}
	rec := AppendRecord(dev, []jsm.Entry{msg(1, "m1"), msg(2, "m2"), msg(3, "m3")})
	apply(s.ApplyAppend, rec)
	apply(s.ApplyAppend, rec) // a resend
	if n, _ := s.Stats(dev); n != 3 {
		t.Fatalf("%d entries after an append and its resend, want 3", n)
	}
	apply(s.ApplyRemove, RemoveRecord(dev, []uint64{2}))
	apply(s.ApplyTrim, TrimRecord(dev, 1))
	var left []uint64
	must(t, s.Read(dev, 0, func(e jsm.Entry) error { left = append(left, e.Seq); return nil }))
	if !slices.Equal(left, []uint64{3}) {
		t.Fatalf("left %v, want [3]", left)
	}
	apply(s.ApplyDrop, DropRecord(dev))
	if n, _ := s.Stats(dev); n != 0 {
		t.Fatalf("%d entries after drop", n)
	}
	const user = "a@example.test"
	apply(s.ApplyOfflineAdd, OfflineAddRecord(user, []jsm.Entry{msg(10, "o1"), msg(11, "o2")}))
	apply(s.ApplyOfflineTrim, OfflineTrimRecord(user, 10))
	if n, err := s.CountOffline(user); err != nil || n != 1 {
		t.Fatalf("offline %d, %v; want 1", n, err)
	}
	if _, err := s.ApplyAppend("primary", TrimRecord(dev, 1)); !errors.Is(err, crecord.ErrKind) {
		t.Fatalf("a trim applied as an append: %v", err)
	}
}
