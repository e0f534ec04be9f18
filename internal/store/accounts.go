package store

import (
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/text/secure/precis"
	"mellium.im/sasl"
	"mellium.im/xmpp/jid"
)

var (
	// ErrNoUser: no account by that name. SASL callers map it to
	// not-authorized, like a wrong password, so that names cannot be probed.
	ErrNoUser = errors.New("store: no such user")
	// ErrUserExists: Add for a name that is taken.
	ErrUserExists = errors.New("store: user exists")
	// ErrMechanism: SaltedCredentials for a mechanism whose credentials are
	// not kept.
	ErrMechanism = errors.New("store: unsupported SASL mechanism")
)

const saltLen = 16

// Accounts holds the node's local accounts. For each it keeps a random salt,
// the iteration count and the SCRAM salted passwords for SHA-1 and SHA-256;
// never the password. Safe for concurrent use.
type Accounts struct{ db *DB }

// account is the stored credential record.
type account struct {
	iterations int64
	salt       []byte
	sha1       []byte // SaltedPassword for SCRAM-SHA-1
	sha256     []byte // SaltedPassword for SCRAM-SHA-256 and PLAIN
}

// Record layout: format 1 | uvarint iterations | uvarint len(salt) | salt |
// 20 bytes SHA-1 | 32 bytes SHA-256. Binary, because it is fixed and read on
// every login; the format byte leaves room for another hash later.
const accountFormat = 1

func (a account) marshal() []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64*2+len(a.salt)+sha1.Size+sha256.Size)
	b = append(b, accountFormat)
	b = binary.AppendUvarint(b, uint64(a.iterations))
	b = binary.AppendUvarint(b, uint64(len(a.salt)))
	b = append(b, a.salt...)
	b = append(b, a.sha1...)
	return append(b, a.sha256...)
}

func unmarshalAccount(b []byte) (account, error) {
	bad := errors.New("store: corrupt account record")
	if len(b) < 1 || b[0] != accountFormat {
		return account{}, bad
	}
	b = b[1:]
	iter, n := binary.Uvarint(b)
	if n <= 0 || iter == 0 || iter > 1<<31 {
		return account{}, bad
	}
	b = b[n:]
	sl, n := binary.Uvarint(b)
	if n <= 0 || sl > 1024 {
		return account{}, bad
	}
	b = b[n:]
	if uint64(len(b)) != sl+sha1.Size+sha256.Size {
		return account{}, bad
	}
	return account{
		iterations: int64(iter),
		salt:       b[:sl],
		sha1:       b[sl : sl+sha1.Size],
		sha256:     b[sl+sha1.Size:],
	}, nil
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

func (a *Accounts) newCredentials(password string) (account, error) {
	p, err := prepare(password)
	if err != nil {
		return account{}, err
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return account{}, fmt.Errorf("store: salt: %w", err)
	}
	iter := a.db.cfg.ScramIterations
	return account{
		iterations: int64(iter),
		salt:       salt,
		sha1:       sasl.SCRAMSaltPassword(sha1.New, p, salt, iter),
		sha256:     sasl.SCRAMSaltPassword(sha256.New, p, salt, iter),
	}, nil
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
	acc, err := a.newCredentials(password)
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
// iteration count). ErrNoUser if there is no such account.
func (a *Accounts) SetPassword(user jid.JID, password string) error {
	bare, err := a.bare(user)
	if err != nil {
		return err
	}
	acc, err := a.newCredentials(password)
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
		acc, err = unmarshalAccount(v)
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

// SaltedCredentials answers mellium.im/sasl's SaltedCredentialsFetcher for
// SCRAM-SHA-1 and SCRAM-SHA-256 (username is the localpart at the node's
// domain). Unknown user: ErrNoUser.
func (a *Accounts) SaltedCredentials(username, mechanism string) (salt, saltedPassword []byte, iterations int64, err error) {
	acc, err := a.load(username)
	if err != nil {
		return nil, nil, 0, err
	}
	switch strings.TrimSuffix(mechanism, "-PLUS") {
	case "SCRAM-SHA-1":
		return acc.salt, acc.sha1, acc.iterations, nil
	case "SCRAM-SHA-256":
		return acc.salt, acc.sha256, acc.iterations, nil
	}
	return nil, nil, 0, fmt.Errorf("%w: %s", ErrMechanism, mechanism)
}

// dummySalt is hashed for unknown users so that VerifyPlain takes as long
// for them as for a wrong password.
var dummySalt = make([]byte, saltLen)

// VerifyPlain checks a PLAIN login: it salts password as the account's
// SCRAM-SHA-256 credential was salted and compares in constant time.
// Unknown user: false and ErrNoUser.
func (a *Accounts) VerifyPlain(username, password string) (bool, error) {
	acc, err := a.load(username)
	if errors.Is(err, ErrNoUser) {
		_ = sasl.SCRAMSaltPassword(sha256.New, []byte(password), dummySalt, a.db.cfg.ScramIterations)
		return false, ErrNoUser
	}
	if err != nil {
		return false, err
	}
	p, err := prepare(password)
	if err != nil {
		return false, nil
	}
	got := sasl.SCRAMSaltPassword(sha256.New, p, acc.salt, int(acc.iterations))
	return subtle.ConstantTimeCompare(got, acc.sha256) == 1, nil
}

// Credentials returns an account's stored record (salt, iterations, salted
// passwords: never the password) for replication to the other nodes of a
// cluster, which store it with PutCredentials.
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
// creating or replacing the account. Replaying it is harmless.
func (a *Accounts) PutCredentials(user jid.JID, record []byte) error {
	bare, err := a.bare(user)
	if err != nil {
		return err
	}
	if _, err := unmarshalAccount(record); err != nil {
		return fmt.Errorf("store: replicated account: %w", err)
	}
	if err := a.db.update(func(txn *badger.Txn) error { return txn.Set(accountKey(bare), record) }); err != nil {
		return fmt.Errorf("store: put account: %w", err)
	}
	return nil
}
