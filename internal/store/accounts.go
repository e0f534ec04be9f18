package store

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/text/secure/precis"
	"mellium.im/xmpp/jid"

	"pushd/internal/scram"
)

var (
	// ErrNoUser: no account by that name. SASL callers map it to
	// not-authorized, like a wrong password, so that names cannot be probed.
	ErrNoUser = errors.New("store: no such user")
	// ErrUserExists: Add for a name that is taken.
	ErrUserExists = errors.New("store: user exists")
	// ErrMechanism: SCRAMCredentials for a mechanism whose credentials are
	// not kept.
	ErrMechanism = errors.New("store: unsupported SASL mechanism")
	// ErrAlgorithm: DigestHA1 for an algorithm whose HA1 is not kept.
	ErrAlgorithm = errors.New("store: unsupported digest algorithm")
	// ErrNoDigest: the account's password was set before pushd kept SIP
	// digest credentials (record format 2). It logs in over XMPP; over SIP
	// only once its password is set again (pushd user passwd), since HA1
	// cannot be made without the password.
	ErrNoDigest = errors.New("store: account has no SIP digest credentials (set the password again to enable SIP)")
)

const saltLen = 16

// Accounts holds the node's local accounts. For each it keeps a random salt,
// the iteration count and, for SCRAM-SHA-1 and SCRAM-SHA-256, the StoredKey
// and ServerKey of RFC 5802 §3: never the password, and never the salted
// password, which would let whoever reads it log in (BEHAVIOUR S5). Safe for
// concurrent use.
//
// For SIP it keeps HA1 = H(localpart ":" domain ":" password) of RFC 7616
// §3.4.2, for MD5 and SHA-256 (RFC 8760), the node's domain being the realm.
// HA1 is what digest verification needs and all it needs; it is not the
// password, but it answers digest challenges of that realm, and as a fast
// hash it is a far cheaper dictionary target than the PBKDF2-derived SCRAM
// keys (docs/deploy/README.md says what that means for a copy of the data).
type Accounts struct{ db *DB }

// account is the stored credential record.
type account struct {
	iterations int
	salt       []byte
	sha1       scram.Keys // SCRAM-SHA-1
	sha256     scram.Keys // SCRAM-SHA-256 and PLAIN
	// HA1 for SIP digest; both nil in a format-2 record.
	ha1MD5    []byte
	ha1SHA256 []byte
}

// Record layouts. Binary, because they are fixed and read on every login;
// the first byte says which.
//
//	format 3: 3 | uvarint iterations | uvarint len(salt) | salt |
//	          StoredKey SHA-1 (20) | ServerKey SHA-1 (20) |
//	          StoredKey SHA-256 (32) | ServerKey SHA-256 (32) |
//	          HA1 MD5 (16) | HA1 SHA-256 (32)
//	format 2: format 3 without the two HA1
//	format 1: 1 | uvarint iterations | uvarint len(salt) | salt |
//	          SaltedPassword SHA-1 (20) | SaltedPassword SHA-256 (32)
//
// Add and SetPassword write format 3. Format 2 stays readable for good:
// it is what every account set before schema version 3 holds, and only its
// password could make HA1, so nothing converts it (such an account has no
// SIP until its password is set again). Format 1 is what binaries before
// schema version 2 wrote. It is only read: converted to format 2 at Open
// (migrateAccounts) and when a node still running such a binary replicates
// one (PutCredentials).
//
// The HA1 cover the localpart and the domain, not just the password: a
// record belongs to its account's name, unlike the SCRAM keys.
const (
	legacyAccountFormat = 1
	scramAccountFormat  = 2
	accountFormat       = 3
)

// marshal writes format 3, or format 2 for an account without HA1 (one
// converted from format 1).
func (a account) marshal() []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64*2+len(a.salt)+2*sha1.Size+2*sha256.Size+md5.Size+sha256.Size)
	format := byte(accountFormat)
	if a.ha1MD5 == nil {
		format = scramAccountFormat
	}
	b = append(b, format)
	b = binary.AppendUvarint(b, uint64(a.iterations))
	b = binary.AppendUvarint(b, uint64(len(a.salt)))
	b = append(b, a.salt...)
	b = append(b, a.sha1.StoredKey...)
	b = append(b, a.sha1.ServerKey...)
	b = append(b, a.sha256.StoredKey...)
	b = append(b, a.sha256.ServerKey...)
	if format == accountFormat {
		b = append(b, a.ha1MD5...)
		b = append(b, a.ha1SHA256...)
	}
	return b
}

var errCorruptAccount = errors.New("store: corrupt account record")

// unmarshalAccount reads any format; legacy reports format 1, whose
// salted passwords it has already turned into keys.
func unmarshalAccount(b []byte) (acc account, legacy bool, err error) {
	if len(b) < 1 {
		return account{}, false, errCorruptAccount
	}
	format := b[0]
	switch format {
	case legacyAccountFormat, scramAccountFormat, accountFormat:
	default:
		return account{}, false, errCorruptAccount
	}
	legacy = format == legacyAccountFormat
	b = b[1:]
	iter, n := binary.Uvarint(b)
	if n <= 0 || iter == 0 || iter > 1<<31 {
		return account{}, false, errCorruptAccount
	}
	b = b[n:]
	sl, n := binary.Uvarint(b)
	if n <= 0 || sl == 0 || sl > 1024 {
		return account{}, false, errCorruptAccount
	}
	b = b[n:]
	if uint64(len(b)) < sl {
		return account{}, false, errCorruptAccount
	}
	acc = account{iterations: int(iter), salt: b[:sl]}
	b = b[sl:]
	if legacy {
		if len(b) != sha1.Size+sha256.Size {
			return account{}, false, errCorruptAccount
		}
		acc.sha1 = scram.SHA1.KeysFromSalted(b[:sha1.Size])
		acc.sha256 = scram.SHA256.KeysFromSalted(b[sha1.Size:])
		return acc, true, nil
	}
	want := 2*sha1.Size + 2*sha256.Size
	if format == accountFormat {
		want += md5.Size + sha256.Size
	}
	if len(b) != want {
		return account{}, false, errCorruptAccount
	}
	acc.sha1 = scram.Keys{StoredKey: b[:sha1.Size], ServerKey: b[sha1.Size : 2*sha1.Size]}
	b = b[2*sha1.Size:]
	acc.sha256 = scram.Keys{StoredKey: b[:sha256.Size], ServerKey: b[sha256.Size : 2*sha256.Size]}
	b = b[2*sha256.Size:]
	if format == accountFormat {
		acc.ha1MD5, acc.ha1SHA256 = b[:md5.Size], b[md5.Size:]
	}
	return acc, false, nil
}

// prepare applies the SASLprep successor (PRECIS OpaqueString) that RFC
// 5802 asks for before hashing, so that equivalent spellings of a password
// log in alike.
func prepare(password string) ([]byte, error) {
	p, err := precis.OpaqueString.Bytes([]byte(password))
	if err != nil {
		return nil, fmt.Errorf("store: password not acceptable: %w", err)
	}
	return p, nil
}

// newCredentials makes a format-3 record for user, whose bare JID the
// caller has checked (bare).
func (a *Accounts) newCredentials(user jid.JID, password string) (account, error) {
	p, err := prepare(password)
	if err != nil {
		return account{}, err
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return account{}, fmt.Errorf("store: salt: %w", err)
	}
	acc := account{iterations: a.db.cfg.ScramIterations, salt: salt}
	if acc.sha1, err = scram.SHA1.DeriveKeys(p, salt, acc.iterations); err != nil {
		return account{}, fmt.Errorf("store: %w", err)
	}
	if acc.sha256, err = scram.SHA256.DeriveKeys(p, salt, acc.iterations); err != nil {
		return account{}, fmt.Errorf("store: %w", err)
	}
	// The prepared password, as for SCRAM: RFC 7616 §4 asks for OpaqueString
	// too, so a phone typing an equivalent spelling gets the same HA1.
	acc.ha1MD5 = digestHA1(md5.New(), user.Localpart(), user.Domainpart(), p)
	acc.ha1SHA256 = digestHA1(sha256.New(), user.Localpart(), user.Domainpart(), p)
	return acc, nil
}

// digestHA1 is H(username ":" realm ":" password), RFC 7616 §3.4.2, as bytes
// (the wire carries it hex-encoded inside the response's hash).
func digestHA1(h hash.Hash, username, realm string, password []byte) []byte {
	h.Write([]byte(username))
	h.Write([]byte{':'})
	h.Write([]byte(realm))
	h.Write([]byte{':'})
	h.Write(password)
	return h.Sum(nil)
}

// bare checks that user is an account JID of this node and returns its key
// string.
func (a *Accounts) bare(user jid.JID) (string, error) {
	if user.Localpart() == "" {
		return "", fmt.Errorf("store: account JID has no localpart")
	}
	if user.Domainpart() != a.db.cfg.Domain {
		return "", fmt.Errorf("store: account JID is not at this node's domain %s", a.db.cfg.Domain)
	}
	return user.Bare().String(), nil
}

// Add creates an account. It fails with ErrUserExists if the name is taken.
func (a *Accounts) Add(user jid.JID, password string) error {
	bare, err := a.bare(user)
	if err != nil {
		return err
	}
	acc, err := a.newCredentials(user, password)
	if err != nil {
		return err
	}
	// Conflict detection makes two concurrent Adds of one name end with one
	// winner: both read the key, the second commit fails.
	err = a.db.update(func(txn *badger.Txn) error {
		_, err := txn.Get(accountKey(bare))
		if err == nil {
			return ErrUserExists
		}
		if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		return txn.Set(accountKey(bare), acc.marshal())
	})
	if errors.Is(err, badger.ErrConflict) {
		err = ErrUserExists
	}
	if err != nil {
		return fmt.Errorf("store: add account: %w", err)
	}
	return nil
}

// SetPassword replaces an account's credentials (new salt, current
// iteration count, HA1 for SIP). ErrNoUser if there is no such account.
func (a *Accounts) SetPassword(user jid.JID, password string) error {
	bare, err := a.bare(user)
	if err != nil {
		return err
	}
	acc, err := a.newCredentials(user, password)
	if err != nil {
		return err
	}
	err = a.db.update(func(txn *badger.Txn) error {
		if _, err := txn.Get(accountKey(bare)); err != nil {
			if errors.Is(err, badger.ErrKeyNotFound) {
				return ErrNoUser
			}
			return err
		}
		return txn.Set(accountKey(bare), acc.marshal())
	})
	if err != nil {
		return fmt.Errorf("store: set password: %w", err)
	}
	return nil
}

// Delete removes an account and its roster. ErrNoUser if there is no such
// account. The user's device queues and offline messages belong to queue:
// the caller drops them there (jsm emits DropQueue; queue.Store.DropOffline).
func (a *Accounts) Delete(user jid.JID) error {
	bare, err := a.bare(user)
	if err != nil {
		return err
	}
	// The account goes first and alone: once it is gone nobody can log in,
	// and a failure while deleting the roster leaves only unreachable rows.
	err = a.db.update(func(txn *badger.Txn) error {
		if _, err := txn.Get(accountKey(bare)); err != nil {
			if errors.Is(err, badger.ErrKeyNotFound) {
				return ErrNoUser
			}
			return err
		}
		return txn.Delete(accountKey(bare))
	})
	if err != nil {
		return fmt.Errorf("store: delete account: %w", err)
	}
	if err := a.db.deletePrefix(Prefix(SpaceRoster, bare)); err != nil {
		return fmt.Errorf("store: delete roster of deleted account: %w", err)
	}
	return nil
}

// Exists reports whether user has an account.
func (a *Accounts) Exists(user jid.JID) (bool, error) {
	bare, err := a.bare(user)
	if err != nil {
		return false, nil
	}
	err = a.db.bdb.View(func(txn *badger.Txn) error {
		_, err := txn.Get(accountKey(bare))
		return err
	})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, badger.ErrKeyNotFound):
		return false, nil
	}
	return false, fmt.Errorf("store: look up account: %w", err)
}

// List returns every account's bare JID, in key order.
func (a *Accounts) List() ([]jid.JID, error) {
	var out []jid.JID
	err := a.db.bdb.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.PrefetchValues = false
		opt.Prefix = []byte{SpaceAccount}
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			j, err := jid.Parse(string(it.Item().Key()[1:]))
			if err != nil {
				return fmt.Errorf("corrupt account key: %w", err)
			}
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: list accounts: %w", err)
	}
	return out, nil
}

// JID returns the bare JID that a SASL username names on this node.
func (a *Accounts) JID(username string) (jid.JID, error) {
	j, err := jid.New(username, a.db.cfg.Domain, "")
	if err != nil {
		// Not a valid localpart: it cannot be an account.
		return jid.JID{}, ErrNoUser
	}
	return j, nil
}

func (a *Accounts) load(username string) (account, error) {
	j, err := a.JID(username)
	if err != nil {
		return account{}, err
	}
	var acc account
	err = a.db.bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(accountKey(j.String()))
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		acc, _, err = unmarshalAccount(v)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return account{}, ErrNoUser
	}
	if err != nil {
		return account{}, fmt.Errorf("store: load account: %w", err)
	}
	return acc, nil
}

// SCRAMCredentials returns what internal/scram's server needs to verify a
// SCRAM-SHA-1 or SCRAM-SHA-256 login (username is the localpart at the
// node's domain). Unknown user: ErrNoUser.
func (a *Accounts) SCRAMCredentials(username, mechanism string) (scram.Credentials, error) {
	acc, err := a.load(username)
	if err != nil {
		return scram.Credentials{}, err
	}
	c := scram.Credentials{Salt: acc.salt, Iterations: acc.iterations}
	switch mechanism {
	case scram.SHA1.Name:
		c.Keys = acc.sha1
	case scram.SHA256.Name:
		c.Keys = acc.sha256
	default:
		return scram.Credentials{}, fmt.Errorf("%w: %s", ErrMechanism, mechanism)
	}
	return c, nil
}

// DigestHA1 returns the HA1 that verifies a SIP digest response (RFC 7616
// §3.4.2, RFC 8760) of username for algorithm "MD5" or "SHA-256" (in any
// case), the realm being the node's domain. username is the digest
// username, which must be the account's localpart as stored (what `pushd
// user list` shows): HA1 covers it, so another spelling could never verify
// and is ErrNoUser like an unknown name. An account whose password predates
// SIP support: ErrNoDigest. Any other algorithm: ErrAlgorithm.
func (a *Accounts) DigestHA1(username, algorithm string) ([]byte, error) {
	var md5Wanted bool
	switch {
	case strings.EqualFold(algorithm, "MD5"):
		md5Wanted = true
	case strings.EqualFold(algorithm, "SHA-256"):
	default:
		return nil, fmt.Errorf("%w: %q", ErrAlgorithm, algorithm)
	}
	if j, err := a.JID(username); err != nil || j.Localpart() != username {
		return nil, ErrNoUser
	}
	acc, err := a.load(username)
	if err != nil {
		return nil, err
	}
	if acc.ha1MD5 == nil {
		return nil, ErrNoDigest
	}
	if md5Wanted {
		return acc.ha1MD5, nil
	}
	return acc.ha1SHA256, nil
}

// dummySalt is hashed for unknown users so that VerifyPlain takes as long
// for them as for a wrong password.
var dummySalt = make([]byte, saltLen)

// VerifyPlain checks a PLAIN login: it derives the SCRAM-SHA-256 keys from
// password with the account's salt and iteration count and compares them
// in constant time. Unknown user: false and ErrNoUser.
func (a *Accounts) VerifyPlain(username, password string) (bool, error) {
	acc, err := a.load(username)
	if errors.Is(err, ErrNoUser) {
		_, _ = scram.SHA256.DeriveKeys([]byte(password), dummySalt, a.db.cfg.ScramIterations)
		return false, ErrNoUser
	}
	if err != nil {
		return false, err
	}
	p, err := prepare(password)
	if err != nil {
		return false, nil
	}
	got, err := scram.SHA256.DeriveKeys(p, acc.salt, acc.iterations)
	if err != nil {
		return false, fmt.Errorf("store: verify password: %w", err)
	}
	return got.Equal(acc.sha256), nil
}

// Credentials returns an account's stored record (salt, iterations,
// StoredKey and ServerKey, HA1: never the password) for replication to the
// other nodes of a cluster, which store it with PutCredentials. The record
// is the account's own: its HA1 cover the name, so the record stored under
// another name logs that name in over XMPP but never over SIP.
func (a *Accounts) Credentials(user jid.JID) ([]byte, error) {
	bare, err := a.bare(user)
	if err != nil {
		return nil, err
	}
	var v []byte
	err = a.db.bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(accountKey(bare))
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNoUser
	}
	if err != nil {
		return nil, fmt.Errorf("store: read account: %w", err)
	}
	return v, nil
}

// PutCredentials stores a record made by Credentials on another node,
// creating or replacing the account. Replaying it is harmless. Formats 3
// and 2 are stored as sent (a format-2 record is an account without SIP,
// as it is on the sender); a format-1 record (from a node of schema 1) is
// stored converted, so no salted password reaches this node's disk.
func (a *Accounts) PutCredentials(user jid.JID, record []byte) error {
	bare, err := a.bare(user)
	if err != nil {
		return err
	}
	acc, legacy, err := unmarshalAccount(record)
	if err != nil {
		return fmt.Errorf("store: replicated account: %w", err)
	}
	if legacy {
		record = acc.marshal()
	}
	if err := a.db.update(func(txn *badger.Txn) error { return txn.Set(accountKey(bare), record) }); err != nil {
		return fmt.Errorf("store: put account: %w", err)
	}
	return nil
}

// migrateAccounts rewrites every format-1 record as format 2 (S5): without
// the password there is no HA1, so not as format 3. Open runs it on a
// database of schema version 1, before anything else can read
// or write; the salted passwords are turned into keys without the
// passwords, so every account keeps working. It may be interrupted and run
// again: records already converted are left alone.
func (a *Accounts) migrateAccounts() (int, error) {
	wb := a.db.bdb.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	err := a.db.bdb.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.Prefix = []byte{SpaceAccount}
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			acc, legacy, err := unmarshalAccount(v)
			if err != nil {
				// Not fatal for the others: this account could not log in
				// before either. The key is a JID: not logged (S3).
				a.db.log.Warn("account record unreadable, left as it is", "err", err)
				continue
			}
			if !legacy {
				continue
			}
			if err := wb.Set(it.Item().KeyCopy(nil), acc.marshal()); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		return 0, fmt.Errorf("store: migrate accounts to StoredKey/ServerKey: %w", err)
	}
	return n, nil
}

// countWithoutDigest counts the accounts whose record has no HA1 (format 2;
// one unreadable cannot log in at all and is not counted), for the upgrade's
// log line.
func (a *Accounts) countWithoutDigest() (int, error) {
	n := 0
	err := a.db.bdb.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.Prefix = []byte{SpaceAccount}
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			// The format byte says it; the record need not be copied.
			err := it.Item().Value(func(v []byte) error {
				if len(v) > 0 && (v[0] == scramAccountFormat || v[0] == legacyAccountFormat) {
					n++
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: count accounts without SIP digest: %w", err)
	}
	return n, nil
}
