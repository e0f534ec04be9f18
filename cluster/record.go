package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Record is one unit of replicated state. The set is closed: the record
// types of this file, each applied by the matching Applier method.
//
// Wire encoding (replication protocol version 2, see replicator.go): a
// record is its RecordType byte, a uvarint length of the body, and the
// body. In a body, a string or []byte is a uvarint length and the bytes,
// an integer is a uvarint, a bool is one byte, a list is a uvarint count
// and its items. A receiver rejects an unknown type (the protocol version
// is bumped when types are added); within a type, fields are only appended
// and a decoder ignores body bytes past the fields it knows.
type Record interface {
	Type() RecordType
	appendBody(b []byte) []byte
}

// RecordType tags a Record on the wire. The values are fixed forever.
type RecordType uint8

const (
	TypeQueueAppend RecordType = 1
	TypeQueueTrim   RecordType = 2
	TypeQueueRemove RecordType = 3
	TypeQueueDrop   RecordType = 4
	TypeSession     RecordType = 5
	TypeSessionGone RecordType = 6
	TypeAccount     RecordType = 7
	TypeStanza      RecordType = 8
	TypeRegistry    RecordType = 9
	TypeHandoverEnd RecordType = 10
	TypeOfflineAdd  RecordType = 11
	TypeOfflineTrim RecordType = 12
)

func (t RecordType) String() string {
	switch t {
	case TypeQueueAppend:
		return "queue-append"
	case TypeQueueTrim:
		return "queue-trim"
	case TypeQueueRemove:
		return "queue-remove"
	case TypeQueueDrop:
		return "queue-drop"
	case TypeSession:
		return "session"
	case TypeSessionGone:
		return "session-gone"
	case TypeAccount:
		return "account"
	case TypeStanza:
		return "stanza"
	case TypeRegistry:
		return "registry"
	case TypeHandoverEnd:
		return "handover-end"
	case TypeOfflineAdd:
		return "offline-add"
	case TypeOfflineTrim:
		return "offline-trim"
	}
	return fmt.Sprintf("record(%d)", uint8(t))
}

// Entry is one queued stanza: the device's sequence number and the stanza
// serialised by the caller (cluster never parses it).
type Entry struct {
	Seq    uint64
	Stanza []byte
}

// QueueAppend: entries were appended to a device's queue (jsm.Enqueue).
// Applying an entry whose Seq the device's queue holds is a no-op.
type QueueAppend struct {
	Device  string // full JID string
	Entries []Entry
}

// QueueTrim: the device's entries with Seq <= Through are gone (jsm.Trim).
type QueueTrim struct {
	Device  string
	Through uint64
}

// QueueRemove: single entries left the device's queue (jsm.Remove, M9).
type QueueRemove struct {
	Device string
	Seqs   []uint64
}

// QueueDrop: the device's queue is deleted (jsm.DropQueue).
type QueueDrop struct {
	Device string
}

// SessionRecord is the replicated state of one device's session: enough
// for the backup to restore it as suspended (H3) and to accept an XEP-0198
// resumption (H4). It replaces any earlier record of the same Device.
type SessionRecord struct {
	User     string // bare JID string
	Device   string // full JID string
	Resource string
	Kind     uint8 // jsm.Kind
	// SMID is the XEP-0198 resumption id; valid cluster-wide.
	SMID string
	// Handled is the XEP-0198 count of stanzas the server handled from
	// the client; Acked the client's count of stanzas it handled, and
	// AckedSeq the device's Seq that count covers. Suspended is false for
	// a session whose client was connected when the record was taken.
	Handled, AckedSeq, Acked uint64
	Suspended                bool
	// Registrations are the device's push registrations, encoded by the
	// caller (opaque here).
	Registrations []byte
	// State is any further per-device state the caller needs (opaque).
	State []byte
}

// SessionGone: the device's session ended for good (clean logout, M8, or
// hibernation expired); the backup forgets it.
type SessionGone struct {
	Device string
}

// OfflineAdd: messages were kept in a user's offline store (XEP-0160),
// each under the primary's sequence number (Entry.Seq). Applying one whose
// number the store holds is a no-op.
type OfflineAdd struct {
	User    string // bare JID string
	Entries []Entry
}

// OfflineTrim: the user's offline messages numbered up to Through are gone
// (delivered at login; Through = ^uint64(0) empties the store).
type OfflineTrim struct {
	User    string
	Through uint64
}

// AccountRecord is one account, replicated to every node (Broadcast).
// Data is the caller's encoding (SCRAM salt and keys); Deleted removes it.
type AccountRecord struct {
	User    string // bare JID string
	Deleted bool
	Data    []byte
}

func (QueueAppend) Type() RecordType    { return TypeQueueAppend }
func (QueueTrim) Type() RecordType      { return TypeQueueTrim }
func (QueueRemove) Type() RecordType    { return TypeQueueRemove }
func (QueueDrop) Type() RecordType      { return TypeQueueDrop }
func (SessionRecord) Type() RecordType  { return TypeSession }
func (SessionGone) Type() RecordType    { return TypeSessionGone }
func (AccountRecord) Type() RecordType  { return TypeAccount }
func (StanzaRecord) Type() RecordType   { return TypeStanza }
func (RegistryRecord) Type() RecordType { return TypeRegistry }
func (HandoverEnd) Type() RecordType    { return TypeHandoverEnd }
func (OfflineAdd) Type() RecordType     { return TypeOfflineAdd }
func (OfflineTrim) Type() RecordType    { return TypeOfflineTrim }

// HandoverEnd tells a node that joined (or came back) that the sender has
// sent it every device of the users it now serves (fallback, H4): once
// every member has, it may serve them. Served are the users the sender
// served while the receiver was away: what the receiver's own store holds
// of them and was not handed over is stale (delivered, or logged out of,
// meanwhile).
type HandoverEnd struct {
	Served []string
}

func (r HandoverEnd) appendBody(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(r.Served)))
	for _, u := range r.Served {
		b = appendString(b, u)
	}
	return b
}

// RegistryRecord is one push-component device registration (by its
// node), replicated to every node like accounts so that any node's
// component can serve the device's pushes; Data nil removes it. The data
// is the component's own encoding, opaque here.
type RegistryRecord struct {
	Node string
	Data []byte
}

func (r RegistryRecord) appendBody(b []byte) []byte {
	b = appendString(b, r.Node)
	return appendBytes(b, r.Data)
}

// StanzaRecord carries a stanza to the node where its recipient's
// sessions live (routing across nodes): the sender's node stamped 'from'.
// It is not idempotent: the Replicator's in-order, apply-once stream is
// what keeps it from being delivered twice.
type StanzaRecord struct {
	Stanza []byte
}

func (r StanzaRecord) appendBody(b []byte) []byte { return appendBytes(b, r.Stanza) }

func (r OfflineAdd) appendBody(b []byte) []byte {
	return appendEntries(appendString(b, r.User), r.Entries)
}

func (r OfflineTrim) appendBody(b []byte) []byte {
	return binary.AppendUvarint(appendString(b, r.User), r.Through)
}

func (r QueueAppend) appendBody(b []byte) []byte {
	return appendEntries(appendString(b, r.Device), r.Entries)
}

func appendEntries(b []byte, es []Entry) []byte {
	b = binary.AppendUvarint(b, uint64(len(es)))
	for _, e := range es {
		b = binary.AppendUvarint(b, e.Seq)
		b = appendBytes(b, e.Stanza)
	}
	return b
}

func (r QueueTrim) appendBody(b []byte) []byte {
	b = appendString(b, r.Device)
	return binary.AppendUvarint(b, r.Through)
}

func (r QueueRemove) appendBody(b []byte) []byte {
	b = appendString(b, r.Device)
	b = binary.AppendUvarint(b, uint64(len(r.Seqs)))
	for _, s := range r.Seqs {
		b = binary.AppendUvarint(b, s)
	}
	return b
}

func (r QueueDrop) appendBody(b []byte) []byte { return appendString(b, r.Device) }

func (r SessionRecord) appendBody(b []byte) []byte {
	b = appendString(b, r.User)
	b = appendString(b, r.Device)
	b = appendString(b, r.Resource)
	b = append(b, r.Kind)
	b = appendString(b, r.SMID)
	b = binary.AppendUvarint(b, r.Handled)
	b = binary.AppendUvarint(b, r.AckedSeq)
	b = binary.AppendUvarint(b, r.Acked)
	b = appendBool(b, r.Suspended)
	b = appendBytes(b, r.Registrations)
	return appendBytes(b, r.State)
}

func (r SessionGone) appendBody(b []byte) []byte { return appendString(b, r.Device) }

func (r AccountRecord) appendBody(b []byte) []byte {
	b = appendString(b, r.User)
	b = appendBool(b, r.Deleted)
	return appendBytes(b, r.Data)
}

// AppendRecord appends the wire encoding of r to b.
func AppendRecord(b []byte, r Record) []byte {
	b = append(b, byte(r.Type()))
	body := r.appendBody(nil)
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}

// errUnknownRecord: a record type this binary does not know.
var errUnknownRecord = errors.New("cluster: unknown record type")

// DecodeRecord reads one record from the front of b and returns it with
// the bytes that follow it. Byte slices in the record alias b.
func DecodeRecord(b []byte) (Record, []byte, error) {
	d := decoder{b: b}
	t := RecordType(d.byte())
	body := d.bytes()
	if d.err != nil {
		return nil, nil, fmt.Errorf("cluster: record: %w", d.err)
	}
	rest := d.b
	d = decoder{b: body}
	var r Record
	switch t {
	case TypeQueueAppend:
		r = QueueAppend{Device: d.string(), Entries: d.entries()}
	case TypeOfflineAdd:
		r = OfflineAdd{User: d.string(), Entries: d.entries()}
	case TypeOfflineTrim:
		r = OfflineTrim{User: d.string(), Through: d.uvarint()}
	case TypeQueueTrim:
		r = QueueTrim{Device: d.string(), Through: d.uvarint()}
	case TypeQueueRemove:
		q := QueueRemove{Device: d.string()}
		n := d.count(1)
		if n > 0 {
			q.Seqs = make([]uint64, n)
			for i := range q.Seqs {
				q.Seqs[i] = d.uvarint()
			}
		}
		r = q
	case TypeQueueDrop:
		r = QueueDrop{Device: d.string()}
	case TypeSession:
		s := SessionRecord{User: d.string(), Device: d.string(), Resource: d.string()}
		s.Kind = d.byte()
		s.SMID = d.string()
		s.Handled, s.AckedSeq, s.Acked = d.uvarint(), d.uvarint(), d.uvarint()
		s.Suspended = d.byte() != 0
		s.Registrations = d.bytes()
		s.State = d.bytes()
		r = s
	case TypeSessionGone:
		r = SessionGone{Device: d.string()}
	case TypeAccount:
		a := AccountRecord{User: d.string()}
		a.Deleted = d.byte() != 0
		a.Data = d.bytes()
		r = a
	case TypeStanza:
		r = StanzaRecord{Stanza: d.bytes()}
	case TypeHandoverEnd:
		var h HandoverEnd
		if n := d.count(1); n > 0 {
			h.Served = make([]string, n)
			for i := range h.Served {
				h.Served[i] = d.string()
			}
		}
		r = h
	case TypeRegistry:
		rr := RegistryRecord{Node: d.string()}
		if data := d.bytes(); len(data) > 0 {
			rr.Data = data
		}
		r = rr
	default:
		return nil, nil, fmt.Errorf("%w %d", errUnknownRecord, t)
	}
	if d.err != nil {
		return nil, nil, fmt.Errorf("cluster: record %s: %w", t, d.err)
	}
	return r, rest, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

var errShort = errors.New("truncated")

// decoder reads the fields of an encoding; the first failure sticks in err
// and later reads return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errShort
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
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

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) entries() []Entry {
	n := d.count(2)
	if n == 0 {
		return nil
	}
	es := make([]Entry, n)
	for i := range es {
		es[i] = Entry{Seq: d.uvarint(), Stanza: d.bytes()}
	}
	return es
}

// count reads a list length and checks it against what is left, each item
// taking at least min bytes, so a hostile count cannot make a huge slice.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)/min) {
		d.fail()
		return 0
	}
	return int(n)
}
