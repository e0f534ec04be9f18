package dispatch

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"pushd/cluster/record"
)

// The push switch (BEHAVIOUR O2): one cluster-wide state that stops every
// push the dispatcher would send, IM, calls and LPNS alike, and keeps every
// registration. It lives here because the dispatcher is the one place all
// pushes pass (DESIGN rule 3); cmd/pushd stores it on every node, copies
// it to every member and serves it on the admin API.

// keySwitch holds the switch's SwitchState in the node's badger database.
const keySwitch = "dispatch/switch"

// KindSwitch is the kind of the record that copies the push switch to
// every node of a cluster. Key: empty (there is one switch); body: enabled
// flag, version, the node that set it, when (Unix ms). The value is fixed
// forever.
const KindSwitch record.Kind = 15

// SwitchState is the push switch as every node holds it. Of two states the
// one with the higher Version wins, and of equal versions the one set by
// the greater node name, so that members that flipped it at the same time
// agree once they have exchanged their states.
type SwitchState struct {
	Enabled bool `json:"enabled"`
	// Version is a hybrid timestamp: the Unix milliseconds of the change,
	// or one more than the version it replaced when that is later (a
	// clock behind the cluster's still makes the newest change win).
	// 0: never set, enabled.
	Version uint64 `json:"version"`
	// Node is the member that set it ("" alone or never set).
	Node string `json:"node,omitempty"`
	// Changed is when it was set, by Node's clock.
	Changed time.Time `json:"changed,omitzero"`
}

// newer reports whether s should replace cur.
func (s SwitchState) newer(cur SwitchState) bool {
	if s.Version != cur.Version {
		return s.Version > cur.Version
	}
	return s.Node > cur.Node
}

// Gate is what the dispatcher asks before it sends a push: nil or
// enabled, send. Must be safe for concurrent use and cheap (it is asked
// for every push).
type Gate interface{ Enabled() bool }

// SwitchConfig configures OpenSwitch.
type SwitchConfig struct {
	// Node names this member in the versions it sets ("" alone).
	Node string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger gets one line per change (default slog.Default()).
	Logger *slog.Logger
	// Metrics, when set, gets the gauge pushd_push_enabled.
	Metrics prometheus.Registerer
}

// Switch is the push switch of one node, persisted in its database. It is
// a Gate. Safe for concurrent use.
type Switch struct {
	db  *badger.DB
	cfg SwitchConfig
	on  atomic.Bool

	mu sync.Mutex
	st SwitchState
}

// OpenSwitch loads the switch from db (enabled when it was never set).
func OpenSwitch(db *badger.DB, cfg SwitchConfig) (*Switch, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Switch{db: db, cfg: cfg, st: SwitchState{Enabled: true}}
	err := db.View(func(txn *badger.Txn) error {
		it, err := txn.Get([]byte(keySwitch))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			s.st, err = decodeSwitch(v)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("dispatch: load push switch: %w", err)
	}
	s.on.Store(s.st.Enabled)
	if cfg.Metrics != nil {
		g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushd_push_enabled", Help: "1 while pushes are sent, 0 while the push switch (O2) holds them back.",
		}, func() float64 {
			if s.Enabled() {
				return 1
			}
			return 0
		})
		if err := cfg.Metrics.Register(g); err != nil {
			return nil, fmt.Errorf("dispatch: push switch metrics: %w", err)
		}
	}
	return s, nil
}

// Enabled reports whether pushes may be sent.
func (s *Switch) Enabled() bool { return s.on.Load() }

// State is the switch as stored.
func (s *Switch) State() SwitchState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Set is an operator's change at this node: the new state, newer than
// any this node has seen, stored before it returns. Setting the state the
// switch already has still makes a new version: of two operators who
// flipped it at once, the later command is the one that stands.
func (s *Switch) Set(enabled bool) (SwitchState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	st := SwitchState{Enabled: enabled, Version: max(uint64(now.UnixMilli()), s.st.Version+1), Node: s.cfg.Node, Changed: now}
	if err := s.store(st); err != nil {
		return s.st, err
	}
	s.logChange(st, "admin")
	return st, nil
}

// Apply takes a peer's state; it is stored when newer than this node's.
// It reports whether it was: an older one means the peer has not seen
// this node's, which it should be sent.
func (s *Switch) Apply(st SwitchState, from string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !st.newer(s.st) {
		return false, nil
	}
	if err := s.store(st); err != nil {
		return false, err
	}
	s.logChange(st, "cluster "+from)
	return true, nil
}

// store persists st and makes it current; called with s.mu held.
func (s *Switch) store(st SwitchState) error {
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(keySwitch), encodeSwitch(st)) })
	if err != nil {
		return fmt.Errorf("dispatch: store push switch: %w", err)
	}
	s.st = st
	s.on.Store(st.Enabled)
	return nil
}

func (s *Switch) logChange(st SwitchState, via string) {
	msg := "push switch: pushes enabled"
	if !st.Enabled {
		msg = "push switch: pushes disabled; registrations kept, messages still queue"
	}
	s.cfg.Logger.Info(msg, "version", st.Version, "node", st.Node, "via", via)
}

func encodeSwitch(st SwitchState) []byte {
	b := record.AppendBool(nil, st.Enabled)
	b = record.AppendUvarint(b, st.Version)
	b = record.AppendString(b, st.Node)
	var ms uint64
	if !st.Changed.IsZero() {
		ms = uint64(st.Changed.UnixMilli())
	}
	return record.AppendUvarint(b, ms)
}

func decodeSwitch(b []byte) (SwitchState, error) {
	d := record.NewDecoder(b)
	st := SwitchState{Enabled: d.Bool(), Version: d.Uvarint(), Node: d.String()}
	if ms := d.Uvarint(); ms > 0 {
		st.Changed = time.UnixMilli(int64(ms))
	}
	if err := d.Err(); err != nil {
		return SwitchState{}, fmt.Errorf("push switch: %w", err)
	}
	return st, nil
}

// SwitchRecord is the KindSwitch record of st.
func SwitchRecord(st SwitchState) record.Record {
	return record.Record{Kind: KindSwitch, Body: encodeSwitch(st)}
}

// DecodeSwitchRecord reads a KindSwitch record.
func DecodeSwitchRecord(r record.Record) (SwitchState, error) {
	if err := record.Check(r, KindSwitch); err != nil {
		return SwitchState{}, err
	}
	return decodeSwitch(r.Body)
}
