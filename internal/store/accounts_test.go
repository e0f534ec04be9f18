package store

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"mellium.im/sasl"
	"mellium.im/xmpp/jid"

	"pushd/internal/scram"
)

// legacyRecord is an account record as binaries of schema version 1 wrote
// it (format 1, salted passwords), made with mellium's PBKDF2 as they did.
func legacyRecord(password string, salt []byte, iter int) []byte {
	b := []byte{1}
	b = binary.AppendUvarint(b, uint64(iter))
	b = binary.AppendUvarint(b, uint64(len(salt)))
	b = append(b, salt...)
	b = append(b, sasl.SCRAMSaltPassword(sha1.New, []byte(password), salt, iter)...)
	return append(b, sasl.SCRAMSaltPassword(sha256.New, []byte(password), salt, iter)...)
}

// saltedPasswords are what a format-1 record held for password under the
// salt of the record rec: what must not be on disk any more.
func saltedPasswords(t *testing.T, rec []byte, password string) [][]byte {
	t.Helper()
	acc, _, err := unmarshalAccount(rec)
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{
		sasl.SCRAMSaltPassword(sha1.New, []byte(password), acc.salt, acc.iterations),
		sasl.SCRAMSaltPassword(sha256.New, []byte(password), acc.salt, acc.iterations),
	}
}

// assertNoSecrets fails if any value in the database holds a password or
// one of the salted passwords of the given accounts.
func assertNoSecrets(t *testing.T, db *DB, passwords map[string]string) {
	t.Helper()
	var secrets [][]byte
	for user, pw := range passwords {
		rec, err := db.Accounts().Credentials(jid.MustParse(user))
		if err != nil {
			t.Fatal(err)
		}
		if rec[0] == legacyAccountFormat {
			t.Errorf("%s: record in format %d", user, rec[0])
		}
		secrets = append(secrets, []byte(pw))
		secrets = append(secrets, saltedPasswords(t, rec, pw)...)
	}
	_ = db.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, _ := it.Item().ValueCopy(nil)
			for _, s := range secrets {
				if bytes.Contains(v, s) {
					t.Errorf("key %q holds a password or salted password", it.Item().Key())
				}
			}
		}
		return nil
	})
}

// scramLogin runs mellium's SCRAM client against internal/scram's server
// fed by Accounts, as the router does.
func scramLogin(acc *Accounts, mech sasl.Mechanism, user, pass string) bool {
	m, _ := scram.ByName(mech.Name)
	server := scram.NewServer(m, func(u, _ string) (scram.Credentials, error) { return acc.SCRAMCredentials(u, mech.Name) })
	client := sasl.NewClient(mech, sasl.Credentials(func() ([]byte, []byte, []byte) { return []byte(user), []byte(pass), nil }))
	_, msg, err := client.Step(nil)
	if err != nil {
		return false
	}
	for range 3 {
		more, out, err := server.Step(msg)
		if err != nil {
			return false
		}
		// On the last step the client checks the server's signature.
		if _, msg, err = client.Step(out); err != nil {
			return false
		}
		if !more {
			return true
		}
	}
	return false
}

// checkLogins tries every mechanism with the right and a wrong password.
func checkLogins(t *testing.T, acc *Accounts, user, pass string) {
	t.Helper()
	for _, mech := range []sasl.Mechanism{sasl.ScramSha1, sasl.ScramSha256} {
		if !scramLogin(acc, mech, user, pass) {
			t.Errorf("%s %s: refused", mech.Name, user)
		}
		if scramLogin(acc, mech, user, pass+"x") {
			t.Errorf("%s %s: wrong password accepted", mech.Name, user)
		}
	}
	if ok, err := acc.VerifyPlain(user, pass); !ok || err != nil {
		t.Errorf("PLAIN %s: %v, %v", user, ok, err)
	}
	if ok, _ := acc.VerifyPlain(user, pass+"x"); ok {
		t.Errorf("PLAIN %s: wrong password accepted", user)
	}
}

func TestSCRAMCredentials(t *testing.T) {
	db := openMem(t)
	acc := db.Accounts()
	if err := acc.Add(jid.MustParse("alice@example.test"), "secret"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mech string
		m    scram.Mechanism
		err  error
	}{
		{"SCRAM-SHA-1", scram.SHA1, nil},
		{"SCRAM-SHA-256", scram.SHA256, nil},
		{"SCRAM-SHA-256-PLUS", scram.Mechanism{}, ErrMechanism},
		{"SCRAM-SHA-512", scram.Mechanism{}, ErrMechanism},
	} {
		c, err := acc.SCRAMCredentials("alice", tc.mech)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: %v", tc.mech, err)
			continue
		}
		if err != nil {
			continue
		}
		if c.Iterations != 4096 || len(c.Salt) != saltLen {
			t.Errorf("%s: iterations %d, salt %d bytes", tc.mech, c.Iterations, len(c.Salt))
		}
		want, err := tc.m.DeriveKeys([]byte("secret"), c.Salt, c.Iterations)
		if err != nil {
			t.Fatal(err)
		}
		if !c.Keys.Equal(want) {
			t.Errorf("%s: keys do not match the password", tc.mech)
		}
	}
	if _, err := acc.SCRAMCredentials("nobody", "SCRAM-SHA-256"); !errors.Is(err, ErrNoUser) {
		t.Errorf("unknown user: %v", err)
	}
	if scramLogin(acc, sasl.ScramSha256, "nobody", "secret") {
		t.Error("unknown user logged in")
	}
}

// New accounts log in with every mechanism and their record holds neither
// the password nor a salted password (S5).
func TestNewAccountsHoldNoPasswordEquivalent(t *testing.T) {
	db := openMem(t)
	acc := db.Accounts()
	if err := acc.Add(jid.MustParse("alice@example.test"), "pässword"); err != nil {
		t.Fatal(err)
	}
	if err := acc.Add(jid.MustParse("bob@example.test"), "old"); err != nil {
		t.Fatal(err)
	}
	if err := acc.SetPassword(jid.MustParse("bob@example.test"), "hunter2"); err != nil {
		t.Fatal(err)
	}
	checkLogins(t, acc, "alice", "pässword")
	checkLogins(t, acc, "bob", "hunter2")
	assertNoSecrets(t, db, map[string]string{"alice@example.test": "pässword", "bob@example.test": "hunter2"})
}

// A database written by a schema-1 binary is upgraded at Open: every
// account keeps its password, the salted passwords are gone, and the next
// Open has nothing to do.
func TestMigrateFromSchema1(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Domain = "example.test"
	db, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	old := map[string]string{"alice@example.test": "pässword", "bob@example.test": "hunter2", "carol@example.test": "carol-pw"}
	err = db.Badger().Update(func(txn *badger.Txn) error {
		for user, pw := range old {
			if err := txn.Set(accountKey(user), legacyRecord(pw, []byte("salt of "+user), 4096)); err != nil {
				return err
			}
		}
		// One record nobody could read before either: left alone.
		if err := txn.Set(accountKey("broken@example.test"), []byte{1, 2}); err != nil {
			return err
		}
		return txn.Set(versionKey, []byte{1})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	db, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "store upgraded") || !strings.Contains(logs.String(), "accounts=3") {
		t.Errorf("no upgrade line for 3 accounts in %q", logs.String())
	}
	if strings.Contains(logs.String(), "broken@") {
		t.Errorf("log names an account: %q", logs.String())
	}
	var version []byte
	_ = db.Badger().View(func(txn *badger.Txn) error {
		item, err := txn.Get(versionKey)
		if err == nil {
			version, err = item.ValueCopy(nil)
		}
		return err
	})
	if !bytes.Equal(version, []byte{schemaVersion}) {
		t.Errorf("schema version %v after upgrade", version)
	}
	for user, pw := range old {
		checkLogins(t, db.Accounts(), strings.TrimSuffix(user, "@example.test"), pw)
	}
	assertNoSecrets(t, db, old)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	logs.Reset()
	db, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if strings.Contains(logs.String(), "upgraded") {
		t.Errorf("second Open upgraded again: %q", logs.String())
	}
	checkLogins(t, db.Accounts(), "alice", "pässword")
}

// A node still on the old binary replicates old records: they are stored
// converted, and records made here carry no salted password to others.
func TestPutCredentialsConvertsOldRecords(t *testing.T) {
	db := openMem(t)
	acc := db.Accounts()
	alice := jid.MustParse("alice@example.test")
	if err := acc.PutCredentials(alice, legacyRecord("pässword", []byte("0123456789abcdef"), 4096)); err != nil {
		t.Fatal(err)
	}
	checkLogins(t, acc, "alice", "pässword")
	assertNoSecrets(t, db, map[string]string{"alice@example.test": "pässword"})

	// A record copied node to node verbatim works on the other node.
	rec, err := acc.Credentials(alice)
	if err != nil {
		t.Fatal(err)
	}
	other := openMem(t)
	if err := other.Accounts().PutCredentials(alice, rec); err != nil {
		t.Fatal(err)
	}
	if got, _ := other.Accounts().Credentials(alice); !bytes.Equal(got, rec) {
		t.Error("a current record was not stored as sent")
	}
	checkLogins(t, other.Accounts(), "alice", "pässword")

	for _, bad := range [][]byte{nil, {3}, {2, 0x80}, rec[:len(rec)-1], append(append([]byte(nil), rec...), 0)} {
		if err := acc.PutCredentials(alice, bad); err == nil {
			t.Errorf("corrupt record %x accepted", bad)
		}
	}
}
