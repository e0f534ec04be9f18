package record

import (
	"errors"
	"reflect"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	recs := []Record{
		{Kind: 1, Key: "a@x/phone", Body: []byte{1, 2, 3}},
		{Kind: 7, Key: "a@x"},
		{Kind: 10},
		{Kind: 0xffff, Key: "node", Body: make([]byte, 300)},
	}
	var b []byte
	for _, r := range recs {
		b = Append(b, r)
	}
	for i, want := range recs {
		got, rest, err := Decode(b)
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

func TestDecodeRejectsBadInput(t *testing.T) {
	full := Append(nil, Record{Kind: 300, Key: "d", Body: []byte("xyz")})
	for i := 0; i < len(full); i++ {
		if _, _, err := Decode(full[:i]); err == nil {
			t.Fatalf("truncated at %d: no error", i)
		}
	}
	if _, _, err := Decode([]byte{0x80, 0x80, 0x04, 0, 0}); err == nil {
		t.Fatal("kind past 16 bits accepted")
	}
}

func TestDecoder(t *testing.T) {
	b := AppendString(nil, "dev")
	b = AppendUvarint(b, 1<<40)
	b = AppendBool(b, true)
	b = AppendBytes(b, nil)
	d := NewDecoder(b)
	if s, n, ok, p := d.String(), d.Uvarint(), d.Bool(), d.Bytes(); s != "dev" || n != 1<<40 || !ok || p != nil || d.Err() != nil {
		t.Fatalf("%q %d %v %v %v", s, n, ok, p, d.Err())
	}
	// A field an older sender did not write reads as zero.
	if d.More() {
		t.Fatal("More at the end")
	}
	// Past the end the first failure sticks.
	if d.Uvarint() != 0 || !errors.Is(d.Err(), ErrShort) || d.String() != "" {
		t.Fatal("read past the end")
	}
	// A huge count in a small body must not allocate.
	d = NewDecoder([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 1})
	if n := d.Count(1); n != 0 || d.Err() == nil {
		t.Fatalf("hostile count: %d, %v", n, d.Err())
	}
}

func TestCheck(t *testing.T) {
	if err := Check(Record{Kind: 3}, 3); err != nil {
		t.Fatal(err)
	}
	if err := Check(Record{Kind: 3}, 4); !errors.Is(err, ErrKind) {
		t.Fatalf("wrong kind: %v", err)
	}
}
