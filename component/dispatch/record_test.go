package dispatch

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"pushd/component/payload"
)

// fullPush has every field of Push and Registration set except the key,
// which is never stored.
func fullPush() Push {
	return Push{
		TrackingID: "5f0c7b2e-8d1a-4c3b-9e6f-2a1b3c4d5e6f",
		Registration: Registration{ID: "node-1", Provider: APNS, Token: "a1b2", VoIPToken: "c3d4", Region: "CN",
			LegacySingleChannel: true, Owner: OwnerSIP, Topic: "com.example.app"},
		Channel:  payload.ChannelVoIP,
		Sealed:   payload.Sealed{Type: payload.TypeCall, Enc: "oKGio6Slpqeoqaqr"},
		Accepted: time.Unix(1700000000, 123456789),
		Attempts: 3,
	}
}

// nonZero fails when a field of v (recursively into structs) is zero, so
// a field added to Push or Registration without a place in the record
// fails here instead of being lost on restart.
func nonZero(t *testing.T, path string, v reflect.Value) {
	t.Helper()
	if v.Kind() == reflect.Struct && v.Type() != reflect.TypeOf(time.Time{}) {
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if f.Name == "Key" || f.Name == "fresh" || f.Name == "coalesced" || f.Name == "notify" {
				continue // never stored: dropped at Submit; in memory only
			}
			nonZero(t, path+"."+f.Name, v.Field(i))
		}
		return
	}
	if v.IsZero() {
		t.Errorf("%s is zero in the sample: give it a value and a place in the record", path)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	p := fullPush()
	nonZero(t, "Push", reflect.ValueOf(p))
	got, err := decodePush(encodePush(&p))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Accepted.Equal(p.Accepted) {
		t.Fatalf("accepted %v, want %v", got.Accepted, p.Accepted)
	}
	got.Accepted = p.Accepted
	if !reflect.DeepEqual(got, p) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, p)
	}
	// Records of earlier versions are JSON.
	old, _ := json.Marshal(p)
	got, err = decodePush(old)
	if err != nil || got.TrackingID != p.TrackingID || got.Registration.VoIPToken != "c3d4" || got.Attempts != 3 {
		t.Fatalf("JSON record: %+v %v", got, err)
	}
	// Records of the first binary layout have no owner: the component's.
	v1 := encodeV1(p)
	got, err = decodePush(v1)
	want := p
	want.Registration.Owner, want.Registration.Topic = OwnerComponent, ""
	got.Accepted = p.Accepted
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("v1 record: %+v %v", got, err)
	}
	enc := encodePush(&p)
	for _, bad := range [][]byte{nil, {9}, enc[:len(enc)-1], append(append([]byte(nil), enc...), 0), enc[:5]} {
		if _, err := decodePush(bad); err == nil {
			t.Errorf("decodePush(%x) accepted", bad)
		}
	}
}

// sendOnce answers every push delivered and reports it.
type sendOnce chan Push

func (s sendOnce) Send(_ context.Context, p Push) Outcome {
	s <- p
	return Outcome{Result: Delivered, Status: 200}
}
func (sendOnce) Reset() {}

// A push left pending by an earlier version (a JSON record) is loaded and
// sent after an upgrade.
func TestLoadsJSONRecord(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p := fullPush()
	p.Channel, p.Registration.Region, p.Registration.LegacySingleChannel = payload.ChannelMessage, "", false
	old, _ := json.Marshal(p)
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(prefixJob+p.TrackingID), old) }); err != nil {
		t.Fatal(err)
	}
	sent := make(sendOnce, 1)
	d, err := New(DefaultConfig(), Deps{DB: db, Providers: map[ProviderName]Provider{APNS: sent}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	select {
	case got := <-sent:
		if got.TrackingID != p.TrackingID || got.DeviceToken() != p.Registration.Token {
			t.Fatalf("sent %+v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stored JSON push not sent")
	}
	// Answered, not merely in flight (an id in flight is refused as a
	// duplicate too): the refusal below must come from the done record.
	deadline := time.Now().Add(5 * time.Second)
	for d.Pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still %d pending after the push was sent", d.Pending())
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := d.Submit(context.Background(), Job{TrackingID: p.TrackingID, Registration: p.Registration,
		Payload: payload.Payload{Type: payload.TypeMessage}}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("resubmitting the answered id: %v", err)
	}
}

// encodeV1 writes p in the first binary layout (no owner), as earlier
// versions stored it.
func encodeV1(p Push) []byte {
	r := p.Registration
	b := []byte{recordV1}
	for _, s := range []string{p.TrackingID, r.ID, string(r.Provider), r.Token, r.VoIPToken, r.Region,
		string(p.Channel), string(p.Sealed.Type), p.Sealed.Enc} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	var flags byte
	if r.LegacySingleChannel {
		flags = 1
	}
	b = append(b, flags)
	b = binary.AppendVarint(b, p.Accepted.UnixNano())
	return binary.AppendUvarint(b, uint64(p.Attempts))
}
