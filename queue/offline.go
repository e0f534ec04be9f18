package queue

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"pushd/internal/stanza"
	"pushd/internal/store"
	"pushd/jsm"
)

// The offline store (XEP-0160, M10) keeps a user's messages under
// o <bare JID> 0x00 <seq>. It has no in-memory index: it is written when a
// user has no device at all and read once at login, and its bound is small
// enough to count on disk.

// StoreOffline keeps msg for user (a bare JID string) and returns once it
// is durable. Past Config.MaxOffline it fails with a *QuotaError.
func (s *Store) StoreOffline(user string, msg *stanza.Element) error {
	_, wait := s.StoreOfflineAsync(user, msg)
	return wait()
}

// StoreOfflineAsync is StoreOffline that does not wait; see AppendAsync.
// It returns the message's sequence number in user's offline store, which
// a replica stores it under (PutOfflineAsync).
func (s *Store) StoreOfflineAsync(user string, msg *stanza.Element) (seq uint64, wait func() error) {
	if user == "" || msg == nil {
		return 0, errWait(fmt.Errorf("queue: store offline: empty user or message"))
	}
	seq = s.nextOfflineSeq()
	o := &op{kind: opStoreOffline, key: user, recs: []record{{seq: seq, val: encode(msg)}}}
	return seq, wrapWait("store offline", s.submitAsync(o))
}

// PutOfflineAsync stores a replica's copy of user's offline messages under
// the sequence numbers the primary gave them. A message already held is
// skipped, and no bound applies: the primary enforced it.
func (s *Store) PutOfflineAsync(user string, entries []jsm.Entry) (wait func() error) {
	recs := make([]record, len(entries))
	for i, e := range entries {
		recs[i] = record{seq: e.Seq, val: encode(e.Stanza)}
		s.seenOfflineSeq(e.Seq)
	}
	return wrapWait("put offline", s.submitAsync(&op{kind: opPutOffline, key: user, recs: recs}))
}

// TrimOfflineAsync deletes user's offline messages up to and including
// sequence number through (a replica: the primary handed them over).
func (s *Store) TrimOfflineAsync(user string, through uint64) (wait func() error) {
	return wrapWait("trim offline", s.submitAsync(&op{kind: opTrimOffline, key: user, seq: through}))
}

// TakeOffline returns user's offline messages, oldest first, and deletes
// them in the same write; through is the sequence number of the last.
func (s *Store) TakeOffline(user string) (msgs []*stanza.Element, through uint64, err error) {
	o := &op{kind: opTakeOffline, key: user}
	if err := s.submit(o); err != nil {
		return nil, 0, fmt.Errorf("queue: take offline: %w", err)
	}
	out := make([]*stanza.Element, 0, len(o.taken))
	for _, v := range o.taken {
		e, err := decode(v)
		if err != nil {
			// Already deleted: skipping one corrupt value beats losing the
			// rest.
			s.log.Error("offline message unreadable, skipped", "err", err)
			continue
		}
		out = append(out, e)
	}
	return out, o.seq, nil
}

// ReadOffline returns user's offline messages with their sequence numbers,
// oldest first, and leaves them stored. It sees every write submitted
// before it.
func (s *Store) ReadOffline(user string) ([]jsm.Entry, error) {
	s.settled(user)
	var out []jsm.Entry
	err := s.readPrefix(store.Prefix(store.SpaceOffline, user), 0, func(e jsm.Entry) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// OfflineCounts returns how many offline messages each user that has some
// holds, by bare JID string: one scan of the keys.
func (s *Store) OfflineCounts() (map[string]int, error) {
	counts := map[string]int{}
	if err := s.eachOfflineKey(func(user string, _ uint64) { counts[user]++ }); err != nil {
		return nil, fmt.Errorf("queue: offline counts: %w", err)
	}
	return counts, nil
}

// eachOfflineKey calls fn with the user and number of every offline
// message, keys only.
func (s *Store) eachOfflineKey(fn func(user string, seq uint64)) error {
	return s.db.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.PrefetchValues = false
		opt.Prefix = []byte{store.SpaceOffline}
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			user, seq, ok := splitKey(it.Item().Key())
			if !ok {
				return errors.New("corrupt offline key")
			}
			fn(user, seq)
		}
		return nil
	})
}

// Offline sequence numbers are taken from the clock and kept increasing,
// so that a replica can store a message under the primary's number (the
// same message applied twice is stored once) and a node that takes over
// numbers its own after every one it holds.

func (s *Store) nextOfflineSeq() uint64 {
	for {
		prev := s.offlineSeq.Load()
		next := max(prev+1, uint64(time.Now().UnixNano()))
		if s.offlineSeq.CompareAndSwap(prev, next) {
			return next
		}
	}
}

func (s *Store) seenOfflineSeq(seq uint64) {
	for {
		prev := s.offlineSeq.Load()
		if seq <= prev || s.offlineSeq.CompareAndSwap(prev, seq) {
			return
		}
	}
}

// loadOfflineSeq makes the next offline sequence number follow every one
// stored.
func (s *Store) loadOfflineSeq() error {
	return s.eachOfflineKey(func(_ string, seq uint64) { s.seenOfflineSeq(seq) })
}

// DropOffline deletes user's offline messages (the account was deleted).
func (s *Store) DropOffline(user string) error {
	if err := s.submit(&op{kind: opDropOffline, key: user}); err != nil {
		return fmt.Errorf("queue: drop offline: %w", err)
	}
	return nil
}

// CountOffline returns how many offline messages user has.
func (s *Store) CountOffline(user string) (int, error) {
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.PrefetchValues = false
		opt.Prefix = store.Prefix(store.SpaceOffline, user)
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("queue: count offline: %w", err)
	}
	return n, nil
}

func (s *Store) applyStoreOffline(w *writer, user string, r record) error {
	prefix := store.Prefix(store.SpaceOffline, user)
	keys, err := w.keys(prefix)
	if err != nil {
		return err
	}
	if len(keys) >= s.cfg.MaxOffline {
		return &QuotaError{Limit: "offline", Have: int64(len(keys)), Max: int64(s.cfg.MaxOffline)}
	}
	return w.set(badger.NewEntry(seqKey(prefix, r.seq), r.val))
}

func (s *Store) applyPutOffline(w *writer, user string, recs []record) error {
	prefix := store.Prefix(store.SpaceOffline, user)
	for _, r := range recs {
		if err := w.set(badger.NewEntry(seqKey(prefix, r.seq), r.val)); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) applyTrimOffline(w *writer, user string, through uint64) error {
	prefix := store.Prefix(store.SpaceOffline, user)
	keys, err := w.keys(prefix)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if seq, ok := keySeq(k, len(prefix)); ok && seq <= through {
			if err := w.delete(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// offlineValues deletes user's offline messages and, if read, returns their
// values oldest first.
func (s *Store) offlineValues(w *writer, user string, read bool) (vals [][]byte, last uint64, err error) {
	opt := badger.DefaultIteratorOptions
	opt.PrefetchValues = read
	prefix := store.Prefix(store.SpaceOffline, user)
	opt.Prefix = prefix
	it := w.txn.NewIterator(opt)
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		keys = append(keys, item.KeyCopy(nil))
		if read {
			v, err := item.ValueCopy(nil)
			if err != nil {
				it.Close()
				return nil, 0, err
			}
			vals = append(vals, v)
		}
	}
	it.Close()
	for _, k := range keys {
		if err := w.delete(k); err != nil {
			return nil, 0, err
		}
	}
	if n := len(keys); n > 0 {
		last, _ = keySeq(keys[n-1], len(prefix))
	}
	return vals, last, nil
}
