package queue

import (
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"pushd/internal/store"
)

type opKind uint8

const (
	opAppend opKind = iota
	opTrim
	opDrop
	opStoreOffline
	opTakeOffline
	opDropOffline
	opPutOffline
	opTrimOffline
	opRemove
)

// op is one mutation handed to the committer. The committer sets err (and
// taken) and closes done.
type op struct {
	kind opKind
	key  string   // device, or user for the offline kinds
	seq  uint64   // Trim, TrimOffline: through; TakeOffline: the last taken
	seqs []uint64 // Remove: the entries to delete
	recs []record

	err   error
	taken [][]byte // TakeOffline: the values, oldest first
	gen   int      // the writer's generation when the op was applied
	done  chan struct{}
}

type record struct {
	seq      uint64
	val      []byte
	presence bool
}

func (s *Store) submit(o *op) error {
	return s.submitAsync(o)()
}

// submitAsync hands o to the committer and returns a function that waits
// for it. Ops are committed in the order they are submitted, so a caller
// that must keep an order (the router, under its lock) submits without
// waiting and waits later, outside its lock.
func (s *Store) submitAsync(o *op) (wait func() error) {
	o.done = make(chan struct{})
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return func() error { return ErrClosed }
	}
	if o.key != "" {
		s.lastMu.Lock()
		s.last[o.key] = o
		s.lastMu.Unlock()
	}
	s.ops <- o
	s.closeMu.RUnlock()
	return func() error {
		<-o.done
		return o.err
	}
}

// Settled waits until every write submitted for device so far is
// committed, so that a read (or Devices) sees it.
func (s *Store) Settled(device string) { s.settled(device) }

// settled waits until every op submitted for key so far is committed, so
// that a read sees what was written before it.
func (s *Store) settled(key string) {
	s.lastMu.Lock()
	o := s.last[key]
	s.lastMu.Unlock()
	if o != nil {
		<-o.done
	}
}

// finished forgets o as key's last op once it is done.
func (s *Store) finished(o *op) {
	if o.key == "" {
		return
	}
	s.lastMu.Lock()
	if s.last[o.key] == o {
		delete(s.last, o.key)
	}
	s.lastMu.Unlock()
}

// run is the committer. It takes whatever operations are waiting (one at a
// time under SyncAlways), writes them in one transaction and syncs once:
// while one commit is on disk the next group gathers, so the fsync rate
// adapts to the load without a timer.
func (s *Store) run() {
	defer close(s.done)
	batch := make([]*op, 0, s.cfg.MaxBatch)
	for first := range s.ops {
		batch = append(batch[:0], first)
		if s.cfg.Sync != store.SyncAlways {
		gather:
			for len(batch) < s.cfg.MaxBatch {
				select {
				case o, ok := <-s.ops:
					if !ok {
						break gather
					}
					batch = append(batch, o)
				default:
					break gather
				}
			}
		}
		s.commit(batch)
		clear(batch)
	}
}

func (s *Store) commit(batch []*op) {
	s.commits.Add(1)
	w := &writer{db: s.db, txn: s.db.NewTransaction(true)}
	touched := make(map[string]bool)
	var failed error
	for _, o := range batch {
		switch o.kind {
		case opAppend, opTrim, opDrop, opRemove:
			touched[o.key] = true
		}
		o.gen = w.gen
		if err := s.apply(w, o); err != nil {
			var q *QuotaError
			if errors.As(err, &q) {
				o.err = err
				continue
			}
			failed = err
			break
		}
	}
	if failed == nil {
		failed = w.commit()
	} else {
		w.txn.Discard()
	}
	if failed == nil && s.cfg.Sync != store.SyncOS {
		if err := s.db.Sync(); err != nil {
			failed = fmt.Errorf("sync: %w", err)
		}
	}
	if failed != nil {
		s.log.Error("queue commit failed", "ops", len(batch), "err", failed)
		// The index was changed as the ops were applied; disk is the truth.
		// Part of the group may have been committed (a split transaction),
		// which a retry of the same Append finds and skips.
		for dev := range touched {
			if err := s.loadIndex(store.Prefix(store.SpaceQueue, dev)); err != nil {
				s.log.Error("queue index reload failed", "err", err)
			}
		}
		for _, o := range batch {
			if o.kind == opTakeOffline && o.err == nil && w.gen > o.gen {
				// Some of its deletes were committed before the failure:
				// handing the messages over risks a duplicate at the next
				// login, withholding them risks losing them.
				continue
			}
			if o.err == nil {
				o.err = failed
			}
			o.taken = nil
		}
	}
	for _, o := range batch {
		close(o.done)
		s.finished(o)
	}
}

func (s *Store) apply(w *writer, o *op) error {
	switch o.kind {
	case opAppend:
		return s.applyAppend(w, o.key, o.recs)
	case opTrim:
		return s.applyTrim(w, o.key, o.seq)
	case opDrop:
		return s.applyDrop(w, o.key)
	case opStoreOffline:
		return s.applyStoreOffline(w, o.key, o.recs[0])
	case opPutOffline:
		return s.applyPutOffline(w, o.key, o.recs)
	case opTrimOffline:
		return s.applyTrimOffline(w, o.key, o.seq)
	case opTakeOffline:
		vals, last, err := s.offlineValues(w, o.key, true)
		o.taken, o.seq = vals, last
		return err
	case opDropOffline:
		_, _, err := s.offlineValues(w, o.key, false)
		return err
	case opRemove:
		return s.applyRemove(w, o.key, o.seqs)
	}
	return fmt.Errorf("unknown op %d", o.kind)
}

func (s *Store) applyAppend(w *writer, dev string, recs []record) error {
	s.mu.RLock()
	d := s.index[dev]
	s.mu.RUnlock()
	if d == nil {
		d = &devQueue{}
	}
	// Only the committer writes d, so it may read it without the lock.
	var add []record
	var addBytes int64
	for _, r := range recs {
		if _, ok := d.find(r.seq); ok {
			continue
		}
		if slices.ContainsFunc(add, func(a record) bool { return a.seq == r.seq }) {
			continue
		}
		add = append(add, r)
		addBytes += int64(len(r.val))
	}
	if len(add) == 0 {
		return nil
	}
	overEntries := int64(len(d.entries)+len(add)) - int64(s.cfg.MaxEntries)
	overBytes := d.bytes + addBytes - s.cfg.MaxBytes
	var evict []int // indexes into d.entries, ascending
	if overEntries > 0 || overBytes > 0 {
		if s.cfg.EvictPresence {
			for i, m := range d.entries {
				if overEntries <= 0 && overBytes <= 0 {
					break
				}
				if m.presence {
					evict = append(evict, i)
					overEntries--
					overBytes -= m.size
				}
			}
		}
		if overEntries > 0 {
			return &QuotaError{Limit: "entries", Have: int64(len(d.entries)), Max: int64(s.cfg.MaxEntries)}
		}
		if overBytes > 0 {
			return &QuotaError{Limit: "bytes", Have: d.bytes, Max: s.cfg.MaxBytes}
		}
	}

	prefix := store.Prefix(store.SpaceQueue, dev)
	for _, i := range evict {
		if err := w.delete(seqKey(prefix, d.entries[i].seq)); err != nil {
			return err
		}
	}
	for _, r := range add {
		e := badger.NewEntry(seqKey(prefix, r.seq), r.val)
		if r.presence {
			e = e.WithMeta(metaPresence)
		}
		if err := w.set(e); err != nil {
			return err
		}
	}
	if len(evict) > 0 {
		s.log.Debug("evicted queued presence for quota", "count", len(evict))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	for j := len(evict) - 1; j >= 0; j-- {
		d.bytes -= d.entries[evict[j]].size
		d.entries = slices.Delete(d.entries, evict[j], evict[j]+1)
	}
	for _, r := range add {
		m := meta{seq: r.seq, size: int64(len(r.val)), presence: r.presence}
		if n := len(d.entries); n == 0 || d.entries[n-1].seq < r.seq {
			d.entries = append(d.entries, m)
		} else {
			i, _ := d.find(r.seq)
			d.entries = slices.Insert(d.entries, i, m)
		}
		d.bytes += m.size
	}
	s.index[dev] = d
	return nil
}

func (s *Store) applyTrim(w *writer, dev string, through uint64) error {
	s.mu.RLock()
	d := s.index[dev]
	s.mu.RUnlock()
	if d == nil {
		return nil
	}
	n, found := d.find(through)
	if found {
		n++
	}
	if n == 0 {
		return nil
	}
	prefix := store.Prefix(store.SpaceQueue, dev)
	var freed int64
	for _, m := range d.entries[:n] {
		if err := w.delete(seqKey(prefix, m.seq)); err != nil {
			return err
		}
		freed += m.size
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d.entries = slices.Delete(d.entries, 0, n)
	d.bytes -= freed
	if len(d.entries) == 0 {
		delete(s.index, dev)
	}
	return nil
}

// applyRemove deletes single entries (M9: the oldest presence makes room
// for a message).
func (s *Store) applyRemove(w *writer, dev string, seqs []uint64) error {
	s.mu.RLock()
	d := s.index[dev]
	s.mu.RUnlock()
	if d == nil {
		return nil
	}
	prefix := store.Prefix(store.SpaceQueue, dev)
	var freed int64
	for _, seq := range seqs {
		i, ok := d.find(seq)
		if !ok {
			continue
		}
		if err := w.delete(seqKey(prefix, seq)); err != nil {
			return err
		}
		freed += d.entries[i].size
	}
	s.mu.Lock()
	d.entries = slices.DeleteFunc(d.entries, func(m meta) bool { return slices.Contains(seqs, m.seq) })
	d.bytes -= freed
	if len(d.entries) == 0 {
		delete(s.index, dev)
	}
	s.mu.Unlock()
	return nil
}

func (s *Store) applyDrop(w *writer, dev string) error {
	// From disk rather than the index, so that Drop also clears anything
	// the index might have missed.
	keys, err := w.keys(store.Prefix(store.SpaceQueue, dev))
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := w.delete(k); err != nil {
			return err
		}
	}
	s.mu.Lock()
	delete(s.index, dev)
	s.mu.Unlock()
	return nil
}

// writer is the committer's transaction. Past badger's per-transaction
// limit it commits and goes on in a new one: a group is then durable in
// parts, which is safe because every op is idempotent or re-derived from
// disk.
type writer struct {
	db  *badger.DB
	txn *badger.Txn
	gen int // transactions committed so far
}

func (w *writer) rotate() error {
	if err := w.txn.Commit(); err != nil {
		return err
	}
	w.gen++
	w.txn = w.db.NewTransaction(true)
	return nil
}

func (w *writer) set(e *badger.Entry) error {
	err := w.txn.SetEntry(e)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err = w.rotate(); err == nil {
			err = w.txn.SetEntry(e)
		}
	}
	return err
}

func (w *writer) delete(k []byte) error {
	err := w.txn.Delete(k)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err = w.rotate(); err == nil {
			err = w.txn.Delete(k)
		}
	}
	return err
}

// keys lists the keys under prefix as this transaction sees them (its own
// pending writes included).
func (w *writer) keys(prefix []byte) ([][]byte, error) {
	opt := badger.DefaultIteratorOptions
	opt.PrefetchValues = false
	opt.Prefix = prefix
	it := w.txn.NewIterator(opt)
	defer it.Close()
	var out [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		out = append(out, it.Item().KeyCopy(nil))
	}
	return out, nil
}

func (w *writer) commit() error {
	err := w.txn.Commit()
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
