package component

import (
	"fmt"

	"pushd/cluster/record"
)

// KindRegistration is the kind of the record that copies a device
// registration to every node, so that any node's component serves the
// device's pushes. Key: the registration's node; body: its record as the
// registry stores it (Export), empty when it was removed. The value is
// fixed forever.
const KindRegistration record.Kind = 9

// RegistrationRecord is the KindRegistration record of node's stored
// registration (OnChange's rec; nil: removed).
func RegistrationRecord(node string, data []byte) record.Record {
	return record.Record{Kind: KindRegistration, Key: node, Body: record.AppendBytes(nil, data)}
}

// DecodeRegistration reads a KindRegistration record; data is nil when
// the registration was removed.
func DecodeRegistration(r record.Record) (node string, data []byte, err error) {
	if err := record.Check(r, KindRegistration); err != nil {
		return "", nil, err
	}
	d := record.NewDecoder(r.Body)
	data = d.Bytes()
	if err := d.Err(); err != nil {
		return "", nil, fmt.Errorf("component: registration record: %w", err)
	}
	return r.Key, data, nil
}

// ApplyRegistration imports a KindRegistration record another node sent
// (a cluster.ApplyFunc); it is durable when it returns.
func (r *Registry) ApplyRegistration(_ string, rec record.Record) (wait func() error, err error) {
	node, data, err := DecodeRegistration(rec)
	if err != nil {
		return nil, err
	}
	return nil, r.Import(node, data)
}
