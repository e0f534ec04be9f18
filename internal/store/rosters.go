package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"mellium.im/xmpp/jid"

	"pushd/jsm"
)

// Rosters holds every local user's roster, one record per contact, so that
// a change writes one small value. Safe for concurrent use.
type Rosters struct{ db *DB }

// rosterRecord is a RosterItem as stored. JSON, because roster items are
// written one at a time on user action and read once at start: the bytes
// saved by a binary form do not matter, and named fields let items grow
// (approved, pre-approval) without a migration. The contact is in the key.
type rosterRecord struct {
	Name    string   `json:"n,omitempty"`
	Sub     string   `json:"s,omitempty"`
	Ask     bool     `json:"a,omitempty"`
	Pending bool     `json:"p,omitempty"`
	Groups  []string `json:"g,omitempty"`
}

// Save stores item in user's roster, replacing any item for the same
// contact.
func (r *Rosters) Save(user jid.JID, item jsm.RosterItem) error {
	contact := item.JID.Bare().String()
	if contact == "" {
		return errors.New("store: roster item without JID")
	}
	v, err := json.Marshal(rosterRecord{
		Name:    item.Name,
		Sub:     string(item.Subscription),
		Ask:     item.Ask,
		Pending: item.Pending,
		Groups:  item.Groups,
	})
	if err != nil {
		return fmt.Errorf("store: encode roster item: %w", err)
	}
	key := rosterKey(user.Bare().String(), contact)
	if err := r.db.update(func(txn *badger.Txn) error { return txn.Set(key, v) }); err != nil {
		return fmt.Errorf("store: save roster item: %w", err)
	}
	return nil
}

// Delete removes contact from user's roster; deleting an absent item is
// not an error.
func (r *Rosters) Delete(user, contact jid.JID) error {
	key := rosterKey(user.Bare().String(), contact.Bare().String())
	if err := r.db.update(func(txn *badger.Txn) error { return txn.Delete(key) }); err != nil {
		return fmt.Errorf("store: delete roster item: %w", err)
	}
	return nil
}

// Get returns user's roster in contact order.
func (r *Rosters) Get(user jid.JID) ([]jsm.RosterItem, error) {
	m, err := r.load(Prefix(SpaceRoster, user.Bare().String()))
	if err != nil {
		return nil, err
	}
	return m[user.Bare().String()], nil
}

// Load returns every roster, by the user's bare JID string, for jsm.State.
func (r *Rosters) Load() (map[string][]jsm.RosterItem, error) {
	return r.load([]byte{SpaceRoster})
}

func (r *Rosters) load(prefix []byte) (map[string][]jsm.RosterItem, error) {
	out := make(map[string][]jsm.RosterItem)
	err := r.db.bdb.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.Prefix = prefix
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			user, contact, ok := bytes.Cut(item.Key()[1:], []byte{Sep})
			if !ok {
				return fmt.Errorf("corrupt roster key")
			}
			c, err := jid.Parse(string(contact))
			if err != nil {
				return fmt.Errorf("corrupt roster key: %w", err)
			}
			var rec rosterRecord
			if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &rec) }); err != nil {
				return fmt.Errorf("corrupt roster item: %w", err)
			}
			u := string(user)
			out[u] = append(out[u], jsm.RosterItem{
				JID:          c,
				Name:         rec.Name,
				Subscription: jsm.Subscription(rec.Sub),
				Ask:          rec.Ask,
				Pending:      rec.Pending,
				Groups:       rec.Groups,
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: load rosters: %w", err)
	}
	return out, nil
}

// State returns what jsm restarts from: every account, every roster and
// every push registration (queues come from package queue).
func (db *DB) State() (jsm.State, error) {
	users, err := db.accounts.List()
	if err != nil {
		return jsm.State{}, err
	}
	rosters, err := db.rosters.Load()
	if err != nil {
		return jsm.State{}, err
	}
	regs, err := db.pushRegs.Load()
	if err != nil {
		return jsm.State{}, err
	}
	return jsm.State{Users: users, Rosters: rosters, Registrations: regs}, nil
}

// deletePrefix deletes every key under prefix, in transactions small
// enough for badger's per-transaction limit.
func (db *DB) deletePrefix(prefix []byte) error {
	for {
		var keys [][]byte
		err := db.bdb.View(func(txn *badger.Txn) error {
			opt := badger.DefaultIteratorOptions
			opt.PrefetchValues = false
			opt.Prefix = prefix
			it := txn.NewIterator(opt)
			defer it.Close()
			for it.Rewind(); it.Valid() && len(keys) < 1000; it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return err
		}
		err = db.update(func(txn *badger.Txn) error {
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
}
