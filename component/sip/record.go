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
