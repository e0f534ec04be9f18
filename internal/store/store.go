package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// SyncPolicy says when a write is forced to stable storage before it is
// acknowledged.
type SyncPolicy uint8

const (
	// SyncBatch fsyncs once per group of writes that were waiting together:
	// durable against power loss, at a fraction of SyncAlways' cost under load.
	SyncBatch SyncPolicy = iota
	// SyncAlways fsyncs every write on its own.
	SyncAlways
	// SyncOS leaves flushing to the kernel: a crash of the process loses
	// nothing (badger writes through mmap), a power loss may.
	SyncOS
)

func (p SyncPolicy) String() string {
	switch p {
	case SyncAlways:
		return "always"
	case SyncOS:
		return "os"
	default:
		return "batch"
	}
}

// ParseSyncPolicy reads "always", "batch" or "os".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "always":
		return SyncAlways, nil
	case "batch":
		return SyncBatch, nil
	case "os":
		return SyncOS, nil
	}
	return SyncBatch, fmt.Errorf("store: unknown sync policy %q (want always, batch or os)", s)
}

// UnmarshalText lets configuration files name the policy.
func (p *SyncPolicy) UnmarshalText(b []byte) error {
	v, err := ParseSyncPolicy(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// MarshalText is the inverse of UnmarshalText.
func (p SyncPolicy) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// Config is how a node's database is opened. DefaultConfig documents each
// default.
type Config struct {
	// Dir holds the database (default "./data"). Ignored when InMemory.
	Dir string
	// InMemory keeps everything in memory, for tests (default false).
	InMemory bool
	// Sync is the policy for store's own writes (accounts, rosters); queue
	// has its own (default SyncBatch, which for these single writes means
	// one fsync each).
	Sync SyncPolicy
	// Domain is the node's XMPP domain: SASL usernames are localparts at
	// this domain (default "localhost").
	Domain string
	// ScramIterations is the PBKDF2 iteration count for new and changed
	// passwords (default 4096, RFC 7677's minimum). Existing accounts keep
	// theirs until the password changes.
	ScramIterations int
	// MemTableSize bounds each of badger's memtables and so one write
	// transaction (15% of it) and the memory taken at open (default 16 MiB).
	MemTableSize int64
	// BlockCacheSize is badger's read cache (default 16 MiB). Queues are
	// read once, soon after they are written, so a big cache buys little.
	BlockCacheSize int64
	// Logger receives badger's warnings and errors (default slog.Default()).
	Logger *slog.Logger
}

// DefaultConfig returns the configuration of a node on a small (2-core) box.
func DefaultConfig() Config {
	return Config{
		Dir:             "./data",
		Sync:            SyncBatch,
		Domain:          "localhost",
		ScramIterations: 4096,
		MemTableSize:    16 << 20,
		BlockCacheSize:  16 << 20,
	}
}

// DB is a node's open database.
type DB struct {
	bdb      *badger.DB
	cfg      Config
	log      *slog.Logger
	accounts *Accounts
	rosters  *Rosters
	pushRegs *PushRegistrations
}

// Open opens (creating if needed) the database described by cfg. Zero
// fields of cfg take their defaults.
func Open(cfg Config) (*DB, error) {
	def := DefaultConfig()
	if cfg.Dir == "" {
		cfg.Dir = def.Dir
	}
	if cfg.Domain == "" {
		cfg.Domain = def.Domain
	}
	if cfg.ScramIterations <= 0 {
		cfg.ScramIterations = def.ScramIterations
	}
	if cfg.MemTableSize <= 0 {
		cfg.MemTableSize = def.MemTableSize
	}
	if cfg.BlockCacheSize <= 0 {
		cfg.BlockCacheSize = def.BlockCacheSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "store")

	bdb, err := badger.Open(badgerOptions(cfg, log))
	if err != nil {
		if cfg.InMemory {
			return nil, fmt.Errorf("store: open in-memory database: %w", err)
		}
		return nil, fmt.Errorf("store: open database in %s: %w", cfg.Dir, err)
	}
	db := &DB{bdb: bdb, cfg: cfg, log: log}
	db.accounts = &Accounts{db: db}
	db.rosters = &Rosters{db: db}
	db.pushRegs = &PushRegistrations{db: db}
	if err := db.checkVersion(); err != nil {
		_ = bdb.Close()
		return nil, err
	}
	return db, nil
}

func badgerOptions(cfg Config, log *slog.Logger) badger.Options {
	dir := cfg.Dir
	if cfg.InMemory {
		dir = ""
	}
	return badger.DefaultOptions(dir).
		WithInMemory(cfg.InMemory).
		// Durability is decided per write by the Sync policies (explicit
		// db.Sync after a commit), so that queue can fsync a whole group
		// of commits once.
		WithSyncWrites(false).
		// Defaults take ~90 MB at open and run 4 compactors; a 2-core node
		// serving sockets cannot spare either.
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithMemTableSize(cfg.MemTableSize).
		WithNumMemtables(3).
		WithNumLevelZeroTables(3).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(cfg.BlockCacheSize).
		WithIndexCacheSize(0).
		// Snappy stays on: BlockCacheSize must not be 0 without
		// compression off (badger panics at open), and stanzas compress.
		WithCompression(options.Snappy).
		// 64 MiB value-log files keep each mmap small; stanzas stay under
		// ValueThreshold and live in the LSM tree anyway.
		WithValueLogFileSize(64 << 20).
		WithMetricsEnabled(false).
		WithLogger(slogAdapter{log: log})
}

// checkVersion stamps a new database with the schema version, upgrades one
// of an earlier version, and refuses any other.
func (db *DB) checkVersion() error {
	var v []byte
	err := db.bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(versionKey)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return db.setVersion()
	case err != nil:
		return fmt.Errorf("store: read schema version: %w", err)
	case len(v) == 1 && v[0] == schemaVersion:
		return nil
	case len(v) == 1 && (v[0] == 1 || v[0] == 2):
		return db.upgrade(v[0])
	}
	return fmt.Errorf("store: database has schema version %v, this binary reads %d", v, schemaVersion)
}

// upgrade brings a database of schema version 1 or 2 to schemaVersion.
// From 1 the salted passwords become StoredKey/ServerKey; from 2 nothing is
// rewritten, since only a password makes HA1: the accounts keep format 2,
// log in over XMPP, and get SIP when their password is next set. This is
// the one place that says so, once, with how many are concerned.
func (db *DB) upgrade(from byte) error {
	converted := 0
	if from < 2 {
		var err error
		if converted, err = db.accounts.migrateAccounts(); err != nil {
			return err
		}
	}
	noDigest, err := db.accounts.countWithoutDigest()
	if err != nil {
		return err
	}
	// Only once every record is converted: an interrupted migration
	// runs again at the next Open.
	if err := db.setVersion(); err != nil {
		return err
	}
	msg := "store upgraded"
	if converted > 0 {
		msg += "; accounts keep SCRAM StoredKey/ServerKey instead of salted passwords"
	}
	if noDigest > 0 {
		msg += "; accounts set before this version have no SIP digest credentials: set their passwords again (pushd user passwd) to enable SIP"
	}
	db.log.Info(msg, "from_version", from, "to_version", schemaVersion, "accounts", converted, "accounts_without_sip", noDigest)
	return nil
}

func (db *DB) setVersion() error {
	if err := db.update(func(txn *badger.Txn) error { return txn.Set(versionKey, []byte{schemaVersion}) }); err != nil {
		return fmt.Errorf("store: write schema version: %w", err)
	}
	return nil
}

// Badger returns the open badger database for the packages that keep their
// records in it (queue, component registries). They must stay inside the
// key spaces reserved for them in keys.go.
func (db *DB) Badger() *badger.DB { return db.bdb }

// Config returns the configuration the database was opened with, defaults
// filled in.
func (db *DB) Config() Config { return db.cfg }

// Accounts returns the account records.
func (db *DB) Accounts() *Accounts { return db.accounts }

// Rosters returns the roster records.
func (db *DB) Rosters() *Rosters { return db.rosters }

// PushRegistrations returns the devices' XEP-0357 registrations.
func (db *DB) PushRegistrations() *PushRegistrations { return db.pushRegs }

// Close flushes and closes the database. Users of Badger must have stopped
// (queue.Store.Close first).
func (db *DB) Close() error {
	if err := db.bdb.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// update runs fn in a write transaction and applies the sync policy.
func (db *DB) update(fn func(txn *badger.Txn) error) error {
	if err := db.bdb.Update(fn); err != nil {
		return err
	}
	if db.cfg.Sync == SyncOS {
		return nil
	}
	if err := db.bdb.Sync(); err != nil {
		return fmt.Errorf("store: sync: %w", err)
	}
	return nil
}

// slogAdapter routes badger's own logging to slog. Badger's info and debug
// lines (compactions, flushes) go out at debug level, so an operator sees
// only its warnings and errors unless asked.
type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) logf(level slog.Level, format string, args []any) {
	if !a.log.Enabled(context.Background(), level) {
		return
	}
	a.log.Log(context.Background(), level, strings.TrimRight(fmt.Sprintf(format, args...), "\n"), "source", "badger")
}

func (a slogAdapter) Errorf(f string, v ...any)   { a.logf(slog.LevelError, f, v) }
func (a slogAdapter) Warningf(f string, v ...any) { a.logf(slog.LevelWarn, f, v) }
func (a slogAdapter) Infof(f string, v ...any)    { a.logf(slog.LevelDebug, f, v) }
func (a slogAdapter) Debugf(f string, v ...any)   { a.logf(slog.LevelDebug-4, f, v) }
