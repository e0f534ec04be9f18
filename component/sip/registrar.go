package sip

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// prefixBinding is the registrar's keyspace in the node's badger database:
// "sip/binding/" AOR NUL binding id → Binding as JSON.
const prefixBinding = "sip/binding/"

func bindingKey(aor, id string) []byte {
	return []byte(prefixBinding + aor + "\x00" + id)
}

// Registrar holds every binding of every AOR, in memory for the call path
// and in badger so that they survive a restart. Expiry is read against
// the caller's clock: nothing here reads time itself. Safe for concurrent
// use.
type Registrar struct {
	db *badger.DB

	mu    sync.Mutex
	byAOR map[string][]Binding
	// gen counts changes, so that a reader of NextRefresh can keep its
	// answer until a binding changed (see Generation).
	gen atomic.Uint64
	// onChange, if set, hears every stored or removed binding (removed:
	// deleted true), after it is durable: the cluster replicates it.
	onChange func(b Binding, deleted bool)
}

// OpenRegistrar loads the bindings stored in db. A nil db keeps them in
// memory only (tests).
func OpenRegistrar(db *badger.DB) (*Registrar, error) {
	r := &Registrar{db: db, byAOR: map[string][]Binding{}}
	if db == nil {
		return r, nil
	}
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixBinding), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var b Binding
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &b) }); err != nil {
				return fmt.Errorf("sip: load binding: %w", err)
			}
			r.byAOR[b.AOR] = append(r.byAOR[b.AOR], b)
		}
		return nil
	})
	return r, err
}

// OnChange sets the hook told of each change once it is durable.
func (r *Registrar) OnChange(fn func(b Binding, deleted bool)) {
	r.mu.Lock()
	r.onChange = fn
	r.mu.Unlock()
}

// Bindings returns the AOR's bindings that have not expired at now,
// ordered by ID.
func (r *Registrar) Bindings(aor string, now time.Time) []Binding {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Binding
	for _, b := range r.byAOR[aor] {
		if now.Before(b.Expires) {
			out = append(out, b)
		}
	}
	return out
}

// AORs returns every AOR with at least one binding (expired or not), for
// the operator's listing.
func (r *Registrar) AORs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.byAOR))
	for a := range r.byAOR {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// All returns every binding held, for a full copy to a node that joins.
func (r *Registrar) All() []Binding {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Binding
	for _, bs := range r.byAOR {
		out = append(out, bs...)
	}
	return out
}

// Count returns how many bindings are held (expired ones until swept).
func (r *Registrar) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, bs := range r.byAOR {
		n += len(bs)
	}
	return n
}

// maxBindings bounds the bindings of one AOR (S4): a user has a few
// phones and desk sets, not hundreds.
const maxBindings = 10

// ErrOutOfOrder: a REGISTER older than the one that set the binding
// (same Call-ID, lower or equal CSeq), RFC 3261 §10.3 step 7.
var ErrOutOfOrder = errors.New("sip: REGISTER out of order")

// ErrTooManyBindings: the REGISTER would give its AOR more than
// maxBindings bindings.
var ErrTooManyBindings = errors.New("sip: too many bindings")

// Update is one REGISTER's changes to an AOR: bindings to store (new or
// refreshed) and binding ids to remove (expires 0). RemoveAll is
// "Contact: *".
type Update struct {
	Store     []Binding
	Remove    []string
	RemoveAll bool
}

// Apply carries out u for aor and returns what the AOR holds afterwards.
// A REGISTER is all or nothing: when one of its contacts is out of order
// nothing is changed.
func (r *Registrar) Apply(aor string, u Update, now time.Time) ([]Binding, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.byAOR[aor]
	for _, b := range u.Store {
		if i := index(cur, b.ID); i >= 0 && cur[i].CallID == b.CallID && b.CSeq <= cur[i].CSeq {
			return nil, ErrOutOfOrder
		}
	}
	next := slices.Clone(cur)
	var removed []Binding
	// Expired bindings go with any change to their AOR: that, and the
	// sweep, keep the map from growing with phones long gone.
	next = slices.DeleteFunc(next, func(b Binding) bool {
		gone := u.RemoveAll || slices.Contains(u.Remove, b.ID) || !now.Before(b.Expires)
		if gone {
			removed = append(removed, b)
		}
		return gone
	})
	for _, b := range u.Store {
		if i := index(next, b.ID); i >= 0 {
			next[i] = b
		} else {
			next = append(next, b)
		}
		removed = slices.DeleteFunc(removed, func(o Binding) bool { return o.ID == b.ID })
	}
	if len(next) > maxBindings && slices.ContainsFunc(u.Store, func(b Binding) bool { return index(cur, b.ID) < 0 }) {
		return nil, ErrTooManyBindings
	}
	sort.Slice(next, func(i, j int) bool { return next[i].ID < next[j].ID })
	if err := r.persist(u.Store, removed); err != nil {
		return nil, err
	}
	if len(next) == 0 {
		delete(r.byAOR, aor)
	} else {
		r.byAOR[aor] = next
	}
	r.notify(u.Store, removed)
	return slices.Clone(next), nil
}

// Put stores b as it is (a replicated copy, or a refresh flag).
func (r *Registrar) Put(b Binding) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.persist([]Binding{b}, nil); err != nil {
		return err
	}
	cur := r.byAOR[b.AOR]
	if i := index(cur, b.ID); i >= 0 {
		cur[i] = b
	} else {
		cur = append(cur, b)
		sort.Slice(cur, func(i, j int) bool { return cur[i].ID < cur[j].ID })
	}
	r.byAOR[b.AOR] = cur
	r.notify([]Binding{b}, nil)
	return nil
}

// Delete removes one binding (a dead push token, a replicated removal).
func (r *Registrar) Delete(aor, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.byAOR[aor]
	i := index(cur, id)
	if i < 0 {
		return nil
	}
	b := cur[i]
	if err := r.persist(nil, []Binding{b}); err != nil {
		return err
	}
	cur = slices.Delete(slices.Clone(cur), i, i+1)
	if len(cur) == 0 {
		delete(r.byAOR, aor)
	} else {
		r.byAOR[aor] = cur
	}
	r.notify(nil, []Binding{b})
	return nil
}

// DropPush removes the push parameters of the bindings whose push token is
// token: the provider said it is dead (P3). The binding itself stays, a
// live contact still rings.
func (r *Registrar) DropPush(aor, id, token string) (bool, error) {
	r.mu.Lock()
	cur := r.byAOR[aor]
	i := index(cur, id)
	if i < 0 || cur[i].Push == nil || cur[i].Push.PRID != token {
		r.mu.Unlock()
		return false, nil
	}
	b := cur[i]
	r.mu.Unlock()
	b.Push = nil
	return true, r.Put(b)
}

// RefreshDue returns the push bindings of the AORs serve accepts that
// asked for refresh pushes and expire within before of now without having
// had one for this registration (C8: 120 s).
func (r *Registrar) RefreshDue(now time.Time, before time.Duration, serve func(aor string) bool) []Binding {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Binding
	for aor, bs := range r.byAOR {
		if !serve(aor) {
			continue
		}
		for _, b := range bs {
			if b.Push != nil && b.PNSReg && !b.Refreshed && now.Before(b.Expires) && !now.Before(b.Expires.Add(-before)) {
				out = append(out, b)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].AOR+out[i].ID < out[j].AOR+out[j].ID })
	return out
}

// Generation changes whenever a binding is stored or removed: a
// NextRefresh answer holds until it does (or until what serve says
// changes).
func (r *Registrar) Generation() uint64 { return r.gen.Load() }

// NextRefresh is when RefreshDue will next have something (zero: never).
// It looks at every binding: see Generation.
func (r *Registrar) NextRefresh(before time.Duration, serve func(aor string) bool) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var next time.Time
	for aor, bs := range r.byAOR {
		if !serve(aor) {
			continue
		}
		for _, b := range bs {
			if b.Push != nil && b.PNSReg && !b.Refreshed {
				if at := b.Expires.Add(-before); next.IsZero() || at.Before(next) {
					next = at
				}
			}
		}
	}
	return next
}

// Sweep removes bindings expired at now, AOR by AOR.
func (r *Registrar) Sweep(now time.Time) error {
	for _, aor := range r.AORs() {
		if _, err := r.Apply(aor, Update{}, now); err != nil {
			return err
		}
	}
	return nil
}

// persist writes a change (every change goes through it, under r.mu)
// and counts it.
func (r *Registrar) persist(store, remove []Binding) error {
	r.gen.Add(1)
	if r.db == nil {
		return nil
	}
	err := r.db.Update(func(txn *badger.Txn) error {
		for _, b := range remove {
			if err := txn.Delete(bindingKey(b.AOR, b.ID)); err != nil {
				return err
			}
		}
		for _, b := range store {
			v, err := json.Marshal(b)
			if err != nil {
				return err
			}
			if err := txn.Set(bindingKey(b.AOR, b.ID), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sip: store bindings: %w", err)
	}
	return nil
}

func (r *Registrar) notify(store, removed []Binding) {
	if r.onChange == nil {
		return
	}
	for _, b := range removed {
		r.onChange(b, true)
	}
	for _, b := range store {
		r.onChange(b, false)
	}
}

func index(bs []Binding, id string) int {
	return slices.IndexFunc(bs, func(b Binding) bool { return b.ID == id })
}

// aorOf is "user@domain" of a SIP URI's user and host, lower-cased host.
func aorOf(user, host string) string {
	return user + "@" + strings.ToLower(host)
}

// Import stores a binding another node of the cluster registered (or
// removes it), without telling OnChange: it came from there. Of two
// versions of a binding the later registration wins, so that copies
// crossing on the wire cannot step a phone back. It reports whether the
// binding is now stored as given (and not removed).
func (r *Registrar) Import(b Binding, removed bool) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.byAOR[b.AOR]
	i := index(cur, b.ID)
	if i >= 0 && cur[i].Updated.After(b.Updated) {
		return false, nil
	}
	if removed {
		if i < 0 {
			return false, nil
		}
		if err := r.persist(nil, []Binding{cur[i]}); err != nil {
			return false, err
		}
		cur = slices.Delete(slices.Clone(cur), i, i+1)
		if len(cur) == 0 {
			delete(r.byAOR, b.AOR)
		} else {
			r.byAOR[b.AOR] = cur
		}
		return false, nil
	}
	if err := r.persist([]Binding{b}, nil); err != nil {
		return false, err
	}
	cur = slices.Clone(cur)
	if i >= 0 {
		cur[i] = b
	} else {
		cur = append(cur, b)
		sort.Slice(cur, func(i, j int) bool { return cur[i].ID < cur[j].ID })
	}
	r.byAOR[b.AOR] = cur
	return true, nil
}
