package component

import (
	"errors"
	"slices"
	"testing"

	"pushd/cluster/record"
	"pushd/component/dispatch"
)

func TestRegistrationRecordCodec(t *testing.T) {
	for _, tc := range []struct {
		name string
		node string
		data []byte
	}{
		{"stored", "node-1", []byte(`{"node":"node-1"}`)},
		{"removed", "node-2", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := RegistrationRecord(tc.node, tc.data)
			if rec.Kind != KindRegistration || rec.Key != tc.node {
				t.Fatalf("kind %d key %q", rec.Kind, rec.Key)
			}
			later := rec
			later.Body = append(slices.Clip(rec.Body), 0x02, 'x', 'y') // a later revision's field
			for _, r := range []record.Record{rec, later} {
				node, data, err := DecodeRegistration(r)
				if err != nil || node != tc.node || string(data) != string(tc.data) || (data == nil) != (tc.data == nil) {
					t.Fatalf("got %q %q %v", node, data, err)
				}
			}
			if _, _, err := DecodeRegistration(record.Record{Kind: KindRegistration, Key: tc.node}); err == nil {
				t.Fatal("empty body decoded")
			}
		})
	}
	if _, _, err := DecodeRegistration(record.Record{Kind: KindRegistration + 1}); !errors.Is(err, record.ErrKind) {
		t.Fatalf("other kind: %v", err)
	}
}

// A registration made on one node reaches another through its record,
// and so does its removal.
func TestApplyRegistration(t *testing.T) {
	src, err := OpenRegistry(testDB(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var recs []record.Record
	src.OnChange(func(node string, rec []byte) func() error {
		recs = append(recs, RegistrationRecord(node, rec))
		return nil
	})
	d, _, err := src.Register(RegisterRequest{Account: "juliet@example.test", DeviceID: "phone", Provider: dispatch.APNS, Token: "aa11"})
	if err != nil {
		t.Fatal(err)
	}
	dst, err := OpenRegistry(testDB(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	if w, err := dst.ApplyRegistration("n1", recs[0]); err != nil || w != nil {
		t.Fatalf("apply: %v", err)
	}
	if got, err := dst.Get(d.Node); err != nil || got.Token != "aa11" {
		t.Fatalf("replica %+v, %v", got, err)
	}
	if _, err := dst.ApplyRegistration("n1", RegistrationRecord(d.Node, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Get(d.Node); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed registration still there: %v", err)
	}
}
