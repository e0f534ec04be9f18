package cluster

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	recs := []Record{
		QueueAppend{Device: "a@x/phone", Entries: []Entry{{1, []byte("<message/>")}, {7, []byte("<presence/>")}}},
		QueueAppend{Device: "a@x/empty"},
		QueueTrim{Device: "a@x/phone", Through: 1 << 40},
		QueueRemove{Device: "a@x/phone", Seqs: []uint64{3, 4, 9}},
		QueueDrop{Device: "a@x/phone"},
		SessionRecord{User: "a@x", Device: "a@x/phone", Resource: "phone", Kind: 1, SMID: "abc",
			Handled: 5, AckedSeq: 9, Acked: 8, Suspended: true, Registrations: []byte{1, 2}, State: []byte("s")},
		SessionGone{Device: "a@x/phone"},
		AccountRecord{User: "a@x", Data: []byte("scram")},
		AccountRecord{User: "b@x", Deleted: true},
		OfflineAdd{User: "a@x", Entries: []Entry{{1 << 60, []byte("<message/>")}}},
		OfflineTrim{User: "a@x", Through: ^uint64(0)},
		HandoverEnd{},
		HandoverEnd{Served: []string{"a@x", "b@x"}},
	}
	var b []byte
	for _, r := range recs {
		b = AppendRecord(b, r)
	}
	for i, want := range recs {
		got, rest, err := DecodeRecord(b)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("record %d: got %#v, want %#v", i, got, want)
		}
		b = rest
	}
	if len(b) != 0 {
		t.Fatalf("%d bytes left", len(b))
	}
}

func TestRecordRejectsBadInput(t *testing.T) {
	full := AppendRecord(nil, QueueAppend{Device: "d", Entries: []Entry{{1, []byte("xyz")}}})
	for i := 0; i < len(full); i++ {
		if _, _, err := DecodeRecord(full[:i]); err == nil {
			t.Fatalf("truncated at %d: no error", i)
		}
	}
	if _, _, err := DecodeRecord([]byte{99, 0}); !errors.Is(err, errUnknownRecord) {
		t.Fatalf("unknown type: %v", err)
	}
	// A huge count in a small body must not allocate.
	evil := []byte{byte(TypeQueueRemove), 11, 1, 'd', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
	if _, _, err := DecodeRecord(evil); err == nil {
		t.Fatal("hostile count accepted")
	}
}

func TestNodeMeta(t *testing.T) {
	m := NodeMeta{C2SAddr: "10.0.0.1:5222", ClusterAddr: ":7947", AdminAddr: "127.0.0.1:9090", Build: "v1", Started: 1700000000000, Leaving: true}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("encoded NodeMeta: %d bytes of %d", len(b), MetaLimit)
	got, err := DecodeNodeMeta(append(b, 1, 2, 3)) // a later revision's extra fields
	if err != nil || got != m {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := (NodeMeta{C2SAddr: strings.Repeat("x", 600)}).Encode(); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("oversized meta: %v", err)
	}
	if _, err := DecodeNodeMeta([]byte{2}); err == nil {
		t.Fatal("unknown version accepted")
	}
}

func TestStanzaRecordRoundTrip(t *testing.T) {
	in := StanzaRecord{Stanza: []byte(`<message to="a@b"><body>x</body></message>`)}
	b := AppendRecord(nil, in)
	out, rest, err := DecodeRecord(b)
	if err != nil || len(rest) != 0 {
		t.Fatal(err, rest)
	}
	if got, ok := out.(StanzaRecord); !ok || string(got.Stanza) != string(in.Stanza) {
		t.Fatalf("round trip: %#v", out)
	}
}
