package queue

import (
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"pushd/internal/stanza"
	"pushd/internal/store"
)

// The offline store (XEP-0160, M10) keeps a user's messages under
// o <bare JID> 0x00 <seq>. It has no in-memory index: it is written when a
// user has no device at all and read once at login, and its bound is small
// enough to count on disk.

// StoreOffline keeps msg for user (a bare JID string) and returns once it
// is durable. Past Config.MaxOffline it fails with a *QuotaError.
func (s *Store) StoreOffline(user string, msg *stanza.Element) error {
	return s.StoreOfflineAsync(user, msg)()
}

// StoreOfflineAsync is StoreOffline that does not wait; see AppendAsync.
func (s *Store) StoreOfflineAsync(user string, msg *stanza.Element) (wait func() error) {
	if user == "" || msg == nil {
		return errWait(fmt.Errorf("queue: store offline: empty user or message"))
	}
	o := &op{kind: opStoreOffline, key: user, recs: []record{{val: encode(msg)}}}
	return wrapWait("store offline", s.submitAsync(o))
}

// TakeOffline returns user's offline messages, oldest first, and deletes
// them in the same write.
func (s *Store) TakeOffline(user string) ([]*stanza.Element, error) {
	o := &op{kind: opTakeOffline, key: user}
	if err := s.submit(o); err != nil {
		return nil, fmt.Errorf("queue: take offline: %w", err)
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
	return out, nil
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

func (s *Store) applyStoreOffline(w *writer, user string, val []byte) error {
	prefix := store.Prefix(store.SpaceOffline, user)
	keys, err := w.keys(prefix)
	if err != nil {
		return err
	}
	if len(keys) >= s.cfg.MaxOffline {
		return &QuotaError{Limit: "offline", Have: int64(len(keys)), Max: int64(s.cfg.MaxOffline)}
	}
	var next uint64 = 1
	if n := len(keys); n > 0 {
		next = binary.BigEndian.Uint64(keys[n-1][len(prefix):]) + 1
	}
	return w.set(badger.NewEntry(seqKey(prefix, next), val))
}

// offlineValues deletes user's offline messages and, if read, returns their
// values oldest first.
func (s *Store) offlineValues(w *writer, user string, read bool) ([][]byte, error) {
	opt := badger.DefaultIteratorOptions
	opt.PrefetchValues = read
	opt.Prefix = store.Prefix(store.SpaceOffline, user)
	it := w.txn.NewIterator(opt)
	var keys, vals [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		keys = append(keys, item.KeyCopy(nil))
		if read {
			v, err := item.ValueCopy(nil)
			if err != nil {
				it.Close()
				return nil, err
			}
			vals = append(vals, v)
		}
	}
	it.Close()
	for _, k := range keys {
		if err := w.delete(k); err != nil {
			return nil, err
		}
	}
	return vals, nil
}
