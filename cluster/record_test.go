package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"pushd/cluster/record"
)

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

func TestKindsDispatchByKind(t *testing.T) {
	var got []string
	handler := func(name string) ApplyFunc {
		return func(from string, r Record) (func() error, error) {
			got = append(got, name+":"+from+":"+r.Key+":"+string(r.Body))
			return nil, nil
		}
	}
	k := Kinds{1: handler("one"), 7: handler("seven")}
	for _, tc := range []struct {
		rec     Record
		want    string
		unknown bool
	}{
		{rec: Record{Kind: 7, Key: "u@x", Body: []byte("b")}, want: "seven:n1:u@x:b"},
		{rec: Record{Kind: 1, Key: "d"}, want: "one:n1:d:"},
		{rec: Record{Kind: 2, Key: "d"}, unknown: true},
		{rec: Record{Kind: 0}, unknown: true},
	} {
		got = nil
		w, err := k.Apply("n1", tc.rec)
		if tc.unknown {
			if !errors.Is(err, ErrUnknownKind) || w != nil || got != nil {
				t.Errorf("kind %d: err %v, wait %v, applied %v; want ErrUnknownKind and nothing applied", tc.rec.Kind, err, w != nil, got)
			}
			continue
		}
		if err != nil || len(got) != 1 || got[0] != tc.want {
			t.Errorf("kind %d: %v %v, want %s", tc.rec.Kind, got, err, tc.want)
		}
	}
}

// A kind defined outside package cluster, with its own codec, travels
// through a replicator and reaches its handler: adding one changes
// nothing here (issue 11: SIP bindings and LPNS sessions come next).
const kindTestBinding Kind = 4242

// testBinding stands for an owner package's data, with a codec that
// appends a field (Expires) its first version did not have.
type testBinding struct {
	Contact string
	Expires uint64
}

func (b testBinding) record(aor string) Record {
	body := record.AppendString(nil, b.Contact)
	return Record{Kind: kindTestBinding, Key: aor, Body: record.AppendUvarint(body, b.Expires)}
}

func decodeTestBinding(r Record) (testBinding, error) {
	if err := record.Check(r, kindTestBinding); err != nil {
		return testBinding{}, err
	}
	d := record.NewDecoder(r.Body)
	b := testBinding{Contact: d.String()}
	if d.More() {
		b.Expires = d.Uvarint()
	}
	return b, d.Err()
}

func TestNewKindNeedsNoClusterChange(t *testing.T) {
	cfg := ReplicatorConfig{AckTimeout: 5 * time.Second, Logger: quietLogger()}
	got := make(chan string, 2)
	var bindings []testBinding
	recv := Kinds{kindTestBinding: func(from string, r Record) (func() error, error) {
		b, err := decodeTestBinding(r)
		if err != nil {
			return nil, err
		}
		bindings = append(bindings, b)
		got <- from + " " + r.Key
		return nil, nil
	}}
	rp := kindsPair(t, cfg, recv)
	// The second record is what an older sender wrote: no Expires.
	old := Record{Kind: kindTestBinding, Key: "sip:bob@x", Body: record.AppendString(nil, "sip:bob@10.0.0.2")}
	rec := testBinding{Contact: "sip:alice@10.0.0.1", Expires: 3600}.record("sip:alice@x")
	if err := rp.Send(context.Background(), "b", rec, old)(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"p sip:alice@x", "p sip:bob@x"} {
		if g := <-got; g != want {
			t.Fatalf("applied %q, want %q", g, want)
		}
	}
	if bindings[0] != (testBinding{"sip:alice@10.0.0.1", 3600}) || bindings[1] != (testBinding{Contact: "sip:bob@10.0.0.2"}) {
		t.Fatalf("bindings %+v", bindings)
	}
}

// A kind the receiver does not know is not acknowledged: the sender's
// wait does not succeed.
func TestUnknownKindNotAcknowledged(t *testing.T) {
	cfg := ReplicatorConfig{AckTimeout: 300 * time.Millisecond, Logger: quietLogger(), ReconnectMin: time.Millisecond, ReconnectMax: 10 * time.Millisecond}
	rp := kindsPair(t, cfg, Kinds{})
	if err := rp.Send(context.Background(), "b", Record{Kind: 9999, Key: "k"})(); !errors.Is(err, ErrAckTimeout) {
		t.Fatalf("unknown kind: %v, want ErrAckTimeout", err)
	}
}

// kindsPair is a sender "p" and a receiver "b" applying with recv, on an
// in-memory network; it returns the sender.
func kindsPair(t *testing.T, cfg ReplicatorConfig, recv Applier) *Replicator {
	t.Helper()
	net := NewMemNetwork()
	cfg.Name = "b"
	rb, err := NewReplicator(cfg, net.Transport("b"), recv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rb.Close() })
	cfg.Name = "p"
	rp, err := NewReplicator(cfg, net.Transport("p"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rp.Close() })
	return rp
}
