// Package record is the unit of cluster replication: a kind, a key and a
// body. It is a leaf so that the packages owning replicated data (queue,
// router, internal/store, component, …) can encode and decode their own
// records without importing membership and transport; package cluster
// carries records and never looks inside a body.
//
// A kind is allocated by the package that owns the data, as an exported
// constant whose value is fixed forever (it is the wire meaning). The
// node's assembly (cmd/pushd's clusterNode.kinds) lists every kind in one
// cluster.Kinds literal: that list is where to find the next free number,
// and a number taken twice there does not compile.
//
// A body is written with the Append functions and read with a Decoder: a
// string or []byte is a uvarint length and the bytes, an integer a
// uvarint, a bool one byte, a list a uvarint count and its items. Within a
// kind, fields are only ever appended; a decoder ignores bytes past the
// fields it knows, and reads a field that an older sender did not write
// as its zero value (Decoder.More). A change an older decoder would
// misread takes a new kind.
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind tags a record. Values are allocated by the owning packages and
// fixed forever.
type Kind uint16

// Record is one unit of replicated state.
type Record struct {
	Kind Kind
	// Key is what the record is about (a device, a user, a node), as its
	// owner names it. Cluster never parses it, and never logs it: keys
	// are personal data (S3).
	Key string
	// Body is the kind's encoding, opaque to cluster.
	Body []byte
}

// Append appends the wire encoding of r to b: the kind, the key and the
// body, each as in a body (uvarint; uvarint length and bytes).
func Append(b []byte, r Record) []byte {
	b = binary.AppendUvarint(b, uint64(r.Kind))
	b = AppendString(b, r.Key)
	return AppendBytes(b, r.Body)
}

// Decode reads one record from the front of b and returns it with the
// bytes that follow it. Its body aliases b. Any kind decodes: what
// a kind means is the receiver's business.
func Decode(b []byte) (Record, []byte, error) {
	d := NewDecoder(b)
	k := d.Uvarint()
	r := Record{Key: d.String(), Body: d.Bytes()}
	if err := d.Err(); err != nil {
		return Record{}, nil, fmt.Errorf("record: %w", err)
	}
	if k > 0xffff {
		return Record{}, nil, fmt.Errorf("record: kind %d out of range", k)
	}
	r.Kind = Kind(k)
	return r, d.Rest(), nil
}

// ErrKind: a decode function was given a record of another kind.
var ErrKind = errors.New("record: wrong kind")

// Check returns an error wrapping ErrKind unless r is of kind want.
func Check(r Record, want Kind) error {
	if r.Kind != want {
		return fmt.Errorf("%w: %d, want %d", ErrKind, r.Kind, want)
	}
	return nil
}

// AppendString appends s as a uvarint length and its bytes.
func AppendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// AppendBytes appends p as a uvarint length and its bytes.
func AppendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// AppendUvarint appends v as a uvarint.
func AppendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

// AppendBool appends v as one byte.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// ErrShort: the encoding ended inside a field.
var ErrShort = errors.New("truncated")

// Decoder reads the fields of an encoding. The first failure sticks (Err)
// and later reads return zero values, so a decode function reads every
// field and checks once.
type Decoder struct {
	b   []byte
	err error
}

// NewDecoder reads b. Byte slices it returns alias b.
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// Err is the first failure, or nil.
func (d *Decoder) Err() error { return d.err }

// More says whether bytes are left: a field appended after the ones an
// older sender wrote is read only if it did.
func (d *Decoder) More() bool { return d.err == nil && len(d.b) > 0 }

// Rest returns the bytes not read yet.
func (d *Decoder) Rest() []byte { return d.b }

func (d *Decoder) fail() {
	if d.err == nil {
		d.err = ErrShort
	}
	d.b = nil
}

// Byte reads one byte.
func (d *Decoder) Byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// Bool reads one byte, non-zero being true.
func (d *Decoder) Bool() bool { return d.Byte() != 0 }

// Uvarint reads a uvarint.
func (d *Decoder) Uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// Bytes reads a length and that many bytes; an empty field reads as nil.
func (d *Decoder) Bytes() []byte {
	n := d.Uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	if n == 0 {
		return nil
	}
	return p
}

// String reads a length and that many bytes as a string.
func (d *Decoder) String() string { return string(d.Bytes()) }

// Count reads a list length and checks it against what is left, each item
// taking at least min bytes, so that a hostile count cannot make a huge
// slice.
func (d *Decoder) Count(min int) int {
	n := d.Uvarint()
	if d.err != nil || n > uint64(len(d.b)/max(min, 1)) {
		d.fail()
		return 0
	}
	return int(n)
}
