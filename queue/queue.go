package queue

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"

	"pushd/internal/stanza"
	"pushd/internal/store"
	"pushd/jsm"
)

var (
	// ErrQuota: the device's queue (or the user's offline store) is full.
	// The error is a *QuotaError; the sender of a message gets
	// resource-constraint (M9).
	ErrQuota = errors.New("queue: quota exceeded")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("queue: closed")
)

// QuotaError says which bound refused an Append or StoreOffline. It
// carries no JID so that it can be logged as it is (S3).
type QuotaError struct {
	// Limit is "entries", "bytes" or "offline".
	Limit string
	// Have and Max are the current size and the bound, in the Limit's unit.
	Have, Max int64
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("queue: quota exceeded: %s %d of %d", e.Limit, e.Have, e.Max)
}

// Is makes errors.Is(err, ErrQuota) true.
func (e *QuotaError) Is(target error) bool { return target == ErrQuota }

// Config bounds the queues. DefaultConfig documents each default.
type Config struct {
	// MaxEntries bounds each device's queue in stanzas (default 10 000, M9).
	MaxEntries int
	// MaxBytes bounds each device's queue in bytes of stored stanzas
	// (default 64 MiB, M9).
	MaxBytes int64
	// MaxOffline bounds each user's offline store in messages (default
	// 1000, as jsm.Config.MaxOffline).
	MaxOffline int
	// EvictPresence lets an Append that would pass a bound delete the
	// device's oldest queued presence stanzas to make room, in the same
	// write (default true, M9). Without it the Append is refused at once.
	EvictPresence bool
	// Sync is when writes reach the disk before they are acknowledged
	// (default store.SyncBatch: one fsync per group of waiting writes).
	Sync store.SyncPolicy
	// MaxBatch bounds how many waiting operations one group commit takes
	// (default 1024), so that one commit's latency stays bounded.
	MaxBatch int
	// Logger receives failed commits (default slog.Default()).
	Logger *slog.Logger
}

// DefaultConfig returns the bounds of BEHAVIOUR M9 and group commit.
func DefaultConfig() Config {
	return Config{
		MaxEntries:    10000,
		MaxBytes:      64 << 20,
		MaxOffline:    1000,
		EvictPresence: true,
		Sync:          store.SyncBatch,
		MaxBatch:      1024,
	}
}

// DeviceInfo describes one device's queue, for recovery at start.
type DeviceInfo struct {
	Device      string // full JID string
	First, Last uint64 // lowest and highest queued Seq
	Count       int
	Bytes       int64
}

// Store holds every device queue and offline store of the node. Safe for
// concurrent use.
type Store struct {
	db  *badger.DB
	cfg Config
	log *slog.Logger

	// closeMu orders submissions before Close: submitters hold it shared
	// while they hand an op to the committer, Close takes it exclusively
	// to close ops.
	// last is the newest op submitted per device or user, for reads that
	// must see every write before them.
	lastMu sync.Mutex
	last   map[string]*op

	closeMu sync.RWMutex
	closed  bool
	ops     chan *op
	done    chan struct{}

	// mu guards index. Only the committer changes it; readers take it
	// shared for Stats and Devices.
	mu    sync.RWMutex
	index map[string]*devQueue

	// offlineSeq is the last offline sequence number given or seen.
	offlineSeq atomic.Uint64

	// commits counts group commits, so tests (and later metrics) can see
	// how many appends shared one.
	commits atomic.Int64
}

// devQueue is the in-memory index of one device's queue: what is on disk,
// without the stanzas. It is what makes the duplicate check, the quota check
// and Trim free of disk reads.
type devQueue struct {
	entries []meta // ascending Seq
	bytes   int64
}

type meta struct {
	seq      uint64
	size     int64 // bytes of the stored value
	presence bool
}

func (d *devQueue) find(seq uint64) (int, bool) {
	return slices.BinarySearchFunc(d.entries, seq, func(m meta, s uint64) int {
		switch {
		case m.seq < s:
			return -1
		case m.seq > s:
			return 1
		}
		return 0
	})
}

// New opens the queues kept in db, rebuilding the in-memory index with one
// key-only scan, and starts the committer. Zero fields of cfg take their
// defaults. Close it before closing db.
func New(db *badger.DB, cfg Config) (*Store, error) {
	def := DefaultConfig()
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = def.MaxEntries
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = def.MaxBytes
	}
	if cfg.MaxOffline <= 0 {
		cfg.MaxOffline = def.MaxOffline
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = def.MaxBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Store{
		db:    db,
		cfg:   cfg,
		log:   cfg.Logger.With("component", "queue"),
		ops:   make(chan *op, cfg.MaxBatch),
		done:  make(chan struct{}),
		index: make(map[string]*devQueue),
		last:  make(map[string]*op),
	}
	if err := s.loadIndex([]byte{store.SpaceQueue}); err != nil {
		return nil, fmt.Errorf("queue: rebuild index: %w", err)
	}
	if err := s.loadOfflineSeq(); err != nil {
		return nil, fmt.Errorf("queue: offline sequence: %w", err)
	}
	go s.run()
	return s, nil
}

// Close waits for every accepted operation to be committed and stops the
// committer. Later calls fail with ErrClosed.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	close(s.ops)
	s.closeMu.Unlock()
	<-s.done
	return nil
}

// Append adds entries to device's queue and returns once they are durable
// (Config.Sync). An entry whose Seq is queued already is skipped, so
// replaying an Append is harmless. The entries of one call are taken all or
// none: past a bound, and after evicting presence if allowed, it fails with
// a *QuotaError and nothing is written.
func (s *Store) Append(device string, entries []jsm.Entry) error {
	return s.AppendAsync(device, entries)()
}

// AppendAsync is Append that does not wait: it returns at once with a
// function that waits until the entries are durable. Writes are committed
// in the order they were submitted, whichever goroutine waits.
func (s *Store) AppendAsync(device string, entries []jsm.Entry) (wait func() error) {
	if device == "" {
		return errWait(errors.New("queue: append: empty device"))
	}
	if len(entries) == 0 {
		return errWait(nil)
	}
	// Serialising here, before the committer, spreads the CPU work over the
	// callers' goroutines.
	recs := make([]record, len(entries))
	for i, e := range entries {
		if e.Stanza == nil {
			return errWait(fmt.Errorf("queue: append: entry %d has no stanza", e.Seq))
		}
		recs[i] = record{seq: e.Seq, val: encode(e.Stanza), presence: e.Stanza.Name.Local == "presence"}
	}
	w := s.submitAsync(&op{kind: opAppend, key: device, recs: recs})
	return func() error {
		if err := w(); err != nil {
			return fmt.Errorf("queue: append: %w", err)
		}
		return nil
	}
}

// Remove deletes single entries of device's queue, whatever their place
// (BEHAVIOUR M9 evicts the oldest presence to make room for a message).
func (s *Store) Remove(device string, seqs []uint64) error {
	return s.RemoveAsync(device, seqs)()
}

// RemoveAsync is Remove that does not wait; see AppendAsync.
func (s *Store) RemoveAsync(device string, seqs []uint64) (wait func() error) {
	if len(seqs) == 0 {
		return errWait(nil)
	}
	return wrapWait("remove", s.submitAsync(&op{kind: opRemove, key: device, seqs: slices.Clone(seqs)}))
}

// TrimAsync is Trim that does not wait; see AppendAsync.
func (s *Store) TrimAsync(device string, through uint64) (wait func() error) {
	return wrapWait("trim", s.submitAsync(&op{kind: opTrim, key: device, seq: through}))
}

// DropAsync is Drop that does not wait; see AppendAsync.
func (s *Store) DropAsync(device string) (wait func() error) {
	return wrapWait("drop", s.submitAsync(&op{kind: opDrop, key: device}))
}

func errWait(err error) func() error { return func() error { return err } }

func wrapWait(what string, w func() error) func() error {
	return func() error {
		if err := w(); err != nil {
			return fmt.Errorf("queue: %s: %w", what, err)
		}
		return nil
	}
}

// Read calls fn with device's entries of Seq >= from, in Seq order, until
// the queue ends or fn returns an error, which Read returns as it is. fn
// runs outside any database transaction and may call the Store.
func (s *Store) Read(device string, from uint64, fn func(jsm.Entry) error) error {
	s.settled(device)
	return s.readPrefix(store.Prefix(store.SpaceQueue, device), from, fn)
}

// readPrefix calls fn with the entries stored under prefix (a device's
// queue or a user's offline store) of Seq >= from, in Seq order, a chunk
// per transaction, until they end or fn returns an error (returned as it
// is).
func (s *Store) readPrefix(prefix []byte, from uint64, fn func(jsm.Entry) error) error {
	const chunk = 256
	for {
		var batch []jsm.Entry
		err := s.db.View(func(txn *badger.Txn) error {
			opt := badger.DefaultIteratorOptions
			opt.Prefix = prefix
			opt.PrefetchSize = chunk
			it := txn.NewIterator(opt)
			defer it.Close()
			for it.Seek(seqKey(prefix, from)); it.Valid() && len(batch) < chunk; it.Next() {
				item := it.Item()
				seq, ok := keySeq(item.Key(), len(prefix))
				if !ok {
					return errors.New("corrupt key")
				}
				var el *stanza.Element
				if err := item.Value(func(v []byte) (err error) {
					el, err = decode(v)
					return err
				}); err != nil {
					return fmt.Errorf("entry %d: %w", seq, err)
				}
				batch = append(batch, jsm.Entry{Seq: seq, Stanza: el})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("queue: read: %w", err)
		}
		for _, e := range batch {
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(batch) < chunk {
			return nil
		}
		last := batch[len(batch)-1].Seq
		if last == ^uint64(0) {
			return nil
		}
		from = last + 1
	}
}

// Trim deletes device's entries with Seq <= through: the device has
// acknowledged them.
func (s *Store) Trim(device string, through uint64) error {
	return s.TrimAsync(device, through)()
}

// Drop deletes device's whole queue.
func (s *Store) Drop(device string) error {
	return s.DropAsync(device)()
}

// Stats returns how many stanzas, and how many bytes of them, device has
// queued. It reads memory only.
func (s *Store) Stats(device string) (count int, bytes int64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if d := s.index[device]; d != nil {
		return len(d.entries), d.bytes
	}
	return 0, 0
}

// Devices lists every non-empty queue, ordered by device, for recovery at
// start (which detached devices still have stanzas waiting).
func (s *Store) Devices() []DeviceInfo {
	s.mu.RLock()
	out := make([]DeviceInfo, 0, len(s.index))
	for dev, d := range s.index {
		if len(d.entries) == 0 {
			continue
		}
		out = append(out, DeviceInfo{
			Device: dev,
			First:  d.entries[0].seq,
			Last:   d.entries[len(d.entries)-1].seq,
			Count:  len(d.entries),
			Bytes:  d.bytes,
		})
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

// loadIndex rebuilds the index of every queue under prefix from disk.
func (s *Store) loadIndex(prefix []byte) error {
	fresh := make(map[string]*devQueue)
	err := s.db.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.PrefetchValues = false
		opt.Prefix = prefix
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			dev, seq, ok := splitKey(item.Key())
			if !ok {
				return errors.New("corrupt queue key")
			}
			d := fresh[dev]
			if d == nil {
				d = &devQueue{}
				fresh[dev] = d
			}
			size := item.ValueSize()
			d.entries = append(d.entries, meta{
				seq:      seq,
				size:     size,
				presence: item.UserMeta()&metaPresence != 0,
			})
			d.bytes += size
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(prefix) == 1 {
		s.index = fresh
		return nil
	}
	// One device: prefix is Prefix(SpaceQueue, device).
	dev := string(prefix[1 : len(prefix)-1])
	if d := fresh[dev]; d != nil {
		s.index[dev] = d
	} else {
		delete(s.index, dev)
	}
	return nil
}
