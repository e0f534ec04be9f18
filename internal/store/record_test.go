package store

import (
	"errors"
	"slices"
	"testing"

	"mellium.im/xmpp/jid"

	"pushd/cluster/record"
)

func TestAccountRecordCodec(t *testing.T) {
	alice := jid.MustParse("alice@example.test")
	for _, tc := range []struct {
		name    string
		rec     record.Record
		creds   []byte
		deleted bool
	}{
		{"credentials", AccountRecord(alice, []byte("scram")), []byte("scram"), false},
		{"full JID names the account", AccountRecord(jid.MustParse("alice@example.test/phone"), []byte("k")), []byte("k"), false},
		{"deleted", AccountDeletedRecord(alice), nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.rec.Kind != KindAccount || tc.rec.Key != "alice@example.test" {
				t.Fatalf("kind %d key %q", tc.rec.Kind, tc.rec.Key)
			}
			later := tc.rec
			later.Body = append(slices.Clip(tc.rec.Body), 0x01, 0x07) // a later revision's field
			for _, r := range []record.Record{tc.rec, later} {
				user, creds, deleted, err := DecodeAccount(r)
				if err != nil || !user.Equal(alice) || string(creds) != string(tc.creds) || deleted != tc.deleted {
					t.Fatalf("got %v %q %v %v", user, creds, deleted, err)
				}
			}
			for i := range len(tc.rec.Body) {
				cut := tc.rec
				cut.Body = tc.rec.Body[:i]
				if _, _, _, err := DecodeAccount(cut); err == nil {
					t.Fatalf("body cut at %d decoded", i)
				}
			}
		})
	}
	if _, _, _, err := DecodeAccount(record.Record{Kind: KindAccount + 1}); !errors.Is(err, record.ErrKind) {
		t.Fatalf("other kind: %v", err)
	}
	bad := AccountRecord(alice, nil)
	bad.Key = "@@"
	if _, _, _, err := DecodeAccount(bad); err == nil {
		t.Fatal("bad JID decoded")
	}
}
