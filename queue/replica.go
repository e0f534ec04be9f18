package queue

import (
	"fmt"

	// record is the committer's word for a queued value (commit.go).
	crecord "pushd/cluster/record"
	"pushd/internal/stanza"
	"pushd/jsm"
)

// The kinds of the records that replicate a device's queue and a user's
// offline store to the user's backup (H2). Values are fixed forever.
// The key is the device's full JID (queue kinds) or the user's bare JID
// (offline kinds).
const (
	// KindAppend body: the entries, a count then each entry's seq and
	// stanza (as on a jabber:client stream). Applying an entry whose seq
	// the queue holds is a no-op.
	KindAppend crecord.Kind = 1
	// KindTrim body: through; the entries with seq <= through are gone.
	KindTrim crecord.Kind = 2
	// KindRemove body: a count then seqs; single entries left (M9).
	KindRemove crecord.Kind = 3
	// KindDrop body: empty; the queue is deleted.
	KindDrop crecord.Kind = 4
	// KindOfflineAdd body: entries as KindAppend's, each under the
	// primary's offline sequence number; idempotent by (user, seq).
	KindOfflineAdd crecord.Kind = 11
	// KindOfflineTrim body: through; the user's offline messages numbered
	// up to it are gone (^uint64(0) empties the store).
	KindOfflineTrim crecord.Kind = 12
)

// AppendRecord is the record of entries appended to device's queue.
func AppendRecord(device string, entries []jsm.Entry) crecord.Record {
	return crecord.Record{Kind: KindAppend, Key: device, Body: appendEntries(nil, entries)}
}

// TrimRecord is the record of device's entries up to through leaving.
func TrimRecord(device string, through uint64) crecord.Record {
	return crecord.Record{Kind: KindTrim, Key: device, Body: crecord.AppendUvarint(nil, through)}
}

// RemoveRecord is the record of single entries leaving device's queue.
func RemoveRecord(device string, seqs []uint64) crecord.Record {
	b := crecord.AppendUvarint(nil, uint64(len(seqs)))
	for _, s := range seqs {
		b = crecord.AppendUvarint(b, s)
	}
	return crecord.Record{Kind: KindRemove, Key: device, Body: b}
}

// DropRecord is the record of device's queue being deleted.
func DropRecord(device string) crecord.Record {
	return crecord.Record{Kind: KindDrop, Key: device}
}

// OfflineAddRecord is the record of messages kept in user's offline store.
func OfflineAddRecord(user string, entries []jsm.Entry) crecord.Record {
	return crecord.Record{Kind: KindOfflineAdd, Key: user, Body: appendEntries(nil, entries)}
}

// OfflineTrimRecord is the record of user's offline messages up to
// through leaving.
func OfflineTrimRecord(user string, through uint64) crecord.Record {
	return crecord.Record{Kind: KindOfflineTrim, Key: user, Body: crecord.AppendUvarint(nil, through)}
}

// DecodeAppend reads a KindAppend record.
func DecodeAppend(r crecord.Record) (device string, entries []jsm.Entry, err error) {
	entries, err = decodeEntries(r, KindAppend)
	return r.Key, entries, err
}

// DecodeOfflineAdd reads a KindOfflineAdd record.
func DecodeOfflineAdd(r crecord.Record) (user string, entries []jsm.Entry, err error) {
	entries, err = decodeEntries(r, KindOfflineAdd)
	return r.Key, entries, err
}

// DecodeTrim reads a KindTrim record.
func DecodeTrim(r crecord.Record) (device string, through uint64, err error) {
	through, err = decodeThrough(r, KindTrim)
	return r.Key, through, err
}

// DecodeOfflineTrim reads a KindOfflineTrim record.
func DecodeOfflineTrim(r crecord.Record) (user string, through uint64, err error) {
	through, err = decodeThrough(r, KindOfflineTrim)
	return r.Key, through, err
}

// DecodeRemove reads a KindRemove record.
func DecodeRemove(r crecord.Record) (device string, seqs []uint64, err error) {
	if err := crecord.Check(r, KindRemove); err != nil {
		return "", nil, err
	}
	d := crecord.NewDecoder(r.Body)
	if n := d.Count(1); n > 0 {
		seqs = make([]uint64, n)
		for i := range seqs {
			seqs[i] = d.Uvarint()
		}
	}
	if err := d.Err(); err != nil {
		return "", nil, fmt.Errorf("queue: remove record: %w", err)
	}
	return r.Key, seqs, nil
}

// DecodeDrop reads a KindDrop record.
func DecodeDrop(r crecord.Record) (device string, err error) {
	return r.Key, crecord.Check(r, KindDrop)
}

// ApplyAppend applies a primary's KindAppend record on its backup (a
// cluster.ApplyFunc): at once, in order, its wait returning once the group
// commit made it durable. The other Apply methods do the same for their
// kinds.
func (s *Store) ApplyAppend(_ string, r crecord.Record) (wait func() error, err error) {
	dev, entries, err := DecodeAppend(r)
	if err != nil {
		return nil, err
	}
	return s.AppendAsync(dev, entries), nil
}

// ApplyTrim applies a KindTrim record, as ApplyAppend.
func (s *Store) ApplyTrim(_ string, r crecord.Record) (wait func() error, err error) {
	dev, through, err := DecodeTrim(r)
	if err != nil {
		return nil, err
	}
	return s.TrimAsync(dev, through), nil
}

// ApplyRemove applies a KindRemove record, as ApplyAppend.
func (s *Store) ApplyRemove(_ string, r crecord.Record) (wait func() error, err error) {
	dev, seqs, err := DecodeRemove(r)
	if err != nil {
		return nil, err
	}
	return s.RemoveAsync(dev, seqs), nil
}

// ApplyDrop applies a KindDrop record, as ApplyAppend.
func (s *Store) ApplyDrop(_ string, r crecord.Record) (wait func() error, err error) {
	dev, err := DecodeDrop(r)
	if err != nil {
		return nil, err
	}
	return s.DropAsync(dev), nil
}

// ApplyOfflineAdd applies a KindOfflineAdd record, as ApplyAppend.
func (s *Store) ApplyOfflineAdd(_ string, r crecord.Record) (wait func() error, err error) {
	user, entries, err := DecodeOfflineAdd(r)
	if err != nil {
		return nil, err
	}
	return s.PutOfflineAsync(user, entries), nil
}

// ApplyOfflineTrim applies a KindOfflineTrim record, as ApplyAppend.
func (s *Store) ApplyOfflineTrim(_ string, r crecord.Record) (wait func() error, err error) {
	user, through, err := DecodeOfflineTrim(r)
	if err != nil {
		return nil, err
	}
	return s.TrimOfflineAsync(user, through), nil
}

func appendEntries(b []byte, es []jsm.Entry) []byte {
	b = crecord.AppendUvarint(b, uint64(len(es)))
	for _, e := range es {
		b = crecord.AppendUvarint(b, e.Seq)
		b = crecord.AppendBytes(b, stanza.Marshal(e.Stanza, stanza.NSClient))
	}
	return b
}

// replicaMaxDepth bounds a replicated stanza's nesting: it was bounded at
// its edge already, by a limit an operator may have raised.
const replicaMaxDepth = decodeMaxDepth

func decodeEntries(r crecord.Record, k crecord.Kind) ([]jsm.Entry, error) {
	if err := crecord.Check(r, k); err != nil {
		return nil, err
	}
	d := crecord.NewDecoder(r.Body)
	n := d.Count(2)
	var es []jsm.Entry
	if n > 0 {
		es = make([]jsm.Entry, n)
	}
	for i := range es {
		seq, raw := d.Uvarint(), d.Bytes()
		if d.Err() != nil {
			break
		}
		el, err := stanza.Unmarshal(raw, stanza.NSClient, replicaMaxDepth)
		if err != nil {
			return nil, fmt.Errorf("queue: record kind %d: entry %d: %w", k, seq, err)
		}
		es[i] = jsm.Entry{Seq: seq, Stanza: el}
	}
	if err := d.Err(); err != nil {
		return nil, fmt.Errorf("queue: record kind %d: %w", k, err)
	}
	return es, nil
}

func decodeThrough(r crecord.Record, k crecord.Kind) (uint64, error) {
	if err := crecord.Check(r, k); err != nil {
		return 0, err
	}
	d := crecord.NewDecoder(r.Body)
	through := d.Uvarint()
	if err := d.Err(); err != nil {
		return 0, fmt.Errorf("queue: record kind %d: %w", k, err)
	}
	return through, nil
}
