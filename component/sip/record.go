package sip

import (
	"encoding/json"
	"fmt"

	"pushd/cluster/record"
)

// KindBinding is the kind of the record that copies a SIP binding to
// every node of a cluster, so that a call reaching any node finds the
// callee's phones and a phone registering at any node reaches the node
// holding its call (issue 12, H1–H3 for calls). Key: AOR NUL binding id;
// body: a removed flag and the binding as the registrar stores it. The
// value is fixed forever.
const KindBinding record.Kind = 14

// BindingRecord is the KindBinding record of b (removed: it is gone).
func BindingRecord(b Binding, removed bool) record.Record {
	body := record.AppendBool(nil, removed)
	v, _ := json.Marshal(b) // a Binding always encodes
	return record.Record{Kind: KindBinding, Key: b.AOR + "\x00" + b.ID, Body: record.AppendBytes(body, v)}
}

// DecodeBinding reads a KindBinding record.
func DecodeBinding(r record.Record) (b Binding, removed bool, err error) {
	if err := record.Check(r, KindBinding); err != nil {
		return b, false, err
	}
	d := record.NewDecoder(r.Body)
	removed = d.Bool()
	v := d.Bytes()
	if err := d.Err(); err != nil {
		return b, false, fmt.Errorf("sip: binding record: %w", err)
	}
	if err := json.Unmarshal(v, &b); err != nil || b.AOR+"\x00"+b.ID != r.Key {
		return b, false, fmt.Errorf("sip: binding record: bad body")
	}
	return b, removed, nil
}

// KindInCall is the kind of the record by which a node tells every other
// that an AOR has (or no longer has) a call up through it, so that the
// user's session manager, wherever it is and after any takeover, pushes
// their phone while they are in a call (M7). Key: the AOR; body: an
// active flag. The sending node is the record's source. The value is
// fixed forever.
const KindInCall record.Kind = 16

// InCallRecord is the KindInCall record for aor.
func InCallRecord(aor string, active bool) record.Record {
	return record.Record{Kind: KindInCall, Key: aor, Body: record.AppendBool(nil, active)}
}

// DecodeInCall reads a KindInCall record.
func DecodeInCall(r record.Record) (aor string, active bool, err error) {
	if err := record.Check(r, KindInCall); err != nil {
		return "", false, err
	}
	d := record.NewDecoder(r.Body)
	active = d.Bool()
	if err := d.Err(); err != nil || r.Key == "" {
		return "", false, fmt.Errorf("sip: in-call record: bad body")
	}
	return r.Key, active, nil
}
