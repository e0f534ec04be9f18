package router

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	"mellium.im/xmpp/jid"

	"pushd/cluster/record"
	"pushd/internal/stanza"
	"pushd/jsm"
)

// comparable turns a session's registrations' elements into their
// serialised form, which is what survives a round trip.
func comparable(s SessionState) SessionState {
	s.Registrations = slices.Clone(s.Registrations)
	for i, r := range s.Registrations {
		if r.Options != nil {
			r.Options = stanza.New("", "opts", "xml", string(stanza.Marshal(r.Options, "")))
		}
		s.Registrations[i] = r
	}
	return s
}

func TestSessionRecordRoundTrip(t *testing.T) {
	form := stanza.New("jabber:x:data", "x", "type", "submit").Add(
		stanza.New("jabber:x:data", "field", "var", "secret").Add(stanza.New("jabber:x:data", "value").AddText("s3cr<e>t")))
	regs := []jsm.Registration{
		{AppServer: jid.MustParse("push.example.test"), Node: "n1", Options: form,
			Encrypt: &jsm.Encryption{Alg: "aes-256-gcm", Key: make([]byte, 32)}},
		{AppServer: jid.MustParse("other.example.test")},
	}
	for _, tc := range []struct {
		name string
		s    SessionState
	}{
		{"suspended", SessionState{Device: "a@x/phone", SMID: "sm-1", Handled: 5, Acked: 8, AckedSeq: 9,
			Handed: []uint64{10, 11}, Registrations: regs, Pushed: 11}},
		{"live", SessionState{Device: "a@x/desk", SMID: "sm-2", Handled: 1 << 31, Live: true}},
		{"empty", SessionState{Device: "a@x/r"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := SessionRecord(tc.s)
			if rec.Kind != KindSession || rec.Key != tc.s.Device {
				t.Fatalf("kind %d key %q", rec.Kind, rec.Key)
			}
			// As it comes off the wire, and with fields a later revision
			// appended, which this one ignores.
			wire, _, err := record.Decode(record.Append(nil, rec))
			if err != nil {
				t.Fatal(err)
			}
			later := wire
			later.Body = append(slices.Clip(wire.Body), 0x03, 'n', 'e', 'w')
			for _, r := range []record.Record{wire, later} {
				got, err := DecodeSession(r)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(comparable(got), comparable(tc.s)) {
					t.Fatalf("got %+v\nwant %+v", got, tc.s)
				}
			}
			for i := range len(rec.Body) {
				cut := rec
				cut.Body = rec.Body[:i]
				if _, err := DecodeSession(cut); err == nil {
					t.Fatalf("body cut at %d of %d decoded", i, len(rec.Body))
				}
			}
		})
	}
}

// A registration is an item of its own length: a later revision's fields
// inside it are skipped, and one this build cannot read leaves the
// others.
func TestSessionRecordRegistrationItems(t *testing.T) {
	item := appendRegistration(nil, jsm.Registration{AppServer: jid.MustParse("push.example.test"), Node: "n"})
	item = append(item, 0x01, 0x02) // a field added later
	bad := record.AppendString(nil, "a@b@c")
	b := record.AppendString(nil, "sm")
	b = append(b, 0, 0, 0, 0, 0, 0) // Handled, Acked, AckedSeq, Live, no Handed, Pushed
	b = record.AppendUvarint(b, 2)
	b = record.AppendBytes(b, bad)
	b = record.AppendBytes(b, item)
	s, err := DecodeSession(record.Record{Kind: KindSession, Key: "a@x/phone", Body: b})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Registrations) != 1 || s.Registrations[0].Node != "n" || s.Registrations[0].AppServer.String() != "push.example.test" {
		t.Fatalf("registrations %+v", s.Registrations)
	}
}

func TestStanzaAndSessionGoneRecords(t *testing.T) {
	st := stanza.New(stanza.NSClient, "message", "to", "b@x/phone", "from", "a@x/desk", "type", "chat").Add(
		stanza.New(stanza.NSClient, "body").AddText("hi & <bye>"))
	rec := StanzaRecord(st)
	if rec.Kind != KindStanza || rec.Key != "b@x/phone" {
		t.Fatalf("kind %d key %q", rec.Kind, rec.Key)
	}
	got, err := DecodeStanza(rec)
	if err != nil || string(stanza.Marshal(got, stanza.NSClient)) != string(stanza.Marshal(st, stanza.NSClient)) {
		t.Fatalf("stanza %v, %v", got, err)
	}
	if _, err := DecodeStanza(record.Record{Kind: KindStanza, Body: []byte("<message")}); err == nil {
		t.Fatal("half a stanza decoded")
	}
	dev, err := DecodeSessionGone(SessionGoneRecord("b@x/phone"))
	if err != nil || dev != "b@x/phone" {
		t.Fatalf("session gone %q, %v", dev, err)
	}
	if _, err := DecodeSession(SessionGoneRecord("b@x/phone")); !errors.Is(err, record.ErrKind) {
		t.Fatalf("a session-gone read as a session: %v", err)
	}
}
