package failover

import (
	"fmt"

	"pushd/cluster/record"
)

// KindHandoverEnd is the failover protocol's record (H4 fallback): the
// sender has sent a node that joined, or came back, every device of the
// users it now serves; once every member has, it may serve them. Key:
// empty; body: Served, a count and the bare JIDs of the users the sender
// served while the receiver was away (what the receiver's own store holds
// of them and was not handed over is stale). The value is fixed forever.
const KindHandoverEnd record.Kind = 10

func HandoverEndRecord(served []string) record.Record {
	b := record.AppendUvarint(nil, uint64(len(served)))
	for _, u := range served {
		b = record.AppendString(b, u)
	}
	return record.Record{Kind: KindHandoverEnd, Body: b}
}

func DecodeHandoverEnd(r record.Record) (served []string, err error) {
	if err := record.Check(r, KindHandoverEnd); err != nil {
		return nil, err
	}
	d := record.NewDecoder(r.Body)
	if n := d.Count(1); n > 0 {
		served = make([]string, n)
		for i := range served {
			served[i] = d.String()
		}
	}
	if err := d.Err(); err != nil {
		return nil, fmt.Errorf("handover-end record: %w", err)
	}
	return served, nil
}

// KindTakenOver opens the handover to a member the sender had taken for
// dead (it failed, and is back without having left): the sender took over
// what that member served. A member that was only paused or cut off learns
// it here, before the handover's records, and forgets what it holds of its
// users; one that restarted is syncing already. Key and body: empty. The
// value is fixed forever.
const KindTakenOver record.Kind = 13

// TakenOverRecord is the record of KindTakenOver.
func TakenOverRecord() record.Record { return record.Record{Kind: KindTakenOver} }
