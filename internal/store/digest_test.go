package store

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"mellium.im/xmpp/jid"

	"pushd/cluster/record"
	"pushd/internal/scram"
)

// format2Record is an account record as binaries of schema version 2 wrote
// it: the SCRAM keys and no HA1. Spelled out here because it is theirs.
func format2Record(t *testing.T, password string, salt []byte, iter int) []byte {
	t.Helper()
	k1, err := scram.SHA1.DeriveKeys([]byte(password), salt, iter)
	if err != nil {
		t.Fatal(err)
	}
	k256, err := scram.SHA256.DeriveKeys([]byte(password), salt, iter)
	if err != nil {
		t.Fatal(err)
	}
	b := binary.AppendUvarint([]byte{2}, uint64(iter))
	b = binary.AppendUvarint(b, uint64(len(salt)))
	b = append(b, salt...)
	for _, k := range [][]byte{k1.StoredKey, k1.ServerKey, k256.StoredKey, k256.ServerKey} {
		b = append(b, k...)
	}
	return b
}

// ha1 computes HA1 = H(username ":" realm ":" password) the plain way,
// independently of accounts.go.
func ha1(alg, username, realm, password string) []byte {
	s := username + ":" + realm + ":" + password
	if alg == "MD5" {
		h := md5.Sum([]byte(s))
		return h[:]
	}
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// checkDigest fails unless user's stored HA1 are those of password.
func checkDigest(t *testing.T, acc *Accounts, user, password string) {
	t.Helper()
	for _, alg := range []string{"MD5", "SHA-256"} {
		got, err := acc.DigestHA1(user, alg)
		if err != nil {
			t.Errorf("%s %s: %v", alg, user, err)
			continue
		}
		if !bytes.Equal(got, ha1(alg, user, "example.test", password)) {
			t.Errorf("%s %s: HA1 is not that of the password", alg, user)
		}
	}
}

func TestDigestHA1(t *testing.T) {
	db := openMem(t)
	acc := db.Accounts()
	alice := jid.MustParse("alice@example.test")
	if err := acc.Add(alice, "Circle of Life"); err != nil {
		t.Fatal(err)
	}
	checkDigest(t, acc, "alice", "Circle of Life")

	// The algorithm's case does not matter; the localpart's does, since
	// HA1 covers it.
	lower, err := acc.DigestHA1("alice", "sha-256")
	if err != nil || !bytes.Equal(lower, ha1("SHA-256", "alice", "example.test", "Circle of Life")) {
		t.Errorf("sha-256: %x %v", lower, err)
	}
	for _, tc := range []struct {
		user, alg string
		err       error
	}{
		{"nobody", "MD5", ErrNoUser},
		{"Alice", "MD5", ErrNoUser},
		{"bad@name", "MD5", ErrNoUser},
		{"", "MD5", ErrNoUser},
		{"alice", "SHA-512-256", ErrAlgorithm},
		{"alice", "MD5-sess", ErrAlgorithm},
		{"alice", "", ErrAlgorithm},
	} {
		if _, err := acc.DigestHA1(tc.user, tc.alg); !errors.Is(err, tc.err) {
			t.Errorf("%q %q: %v, want %v", tc.user, tc.alg, err, tc.err)
		}
	}

	// A new password, new HA1; the record is format 3.
	if err := acc.SetPassword(alice, "hunter2"); err != nil {
		t.Fatal(err)
	}
	checkDigest(t, acc, "alice", "hunter2")
	checkLogins(t, acc, "alice", "hunter2")
	rec, err := acc.Credentials(alice)
	if err != nil {
		t.Fatal(err)
	}
	if rec[0] != 3 {
		t.Errorf("record format %d after SetPassword", rec[0])
	}
	assertNoSecrets(t, db, map[string]string{"alice@example.test": "hunter2"})
}

// HA1 is made from the prepared password, as the SCRAM keys are (RFC 7616
// §4: OpaqueString), so a phone that types the composed form of what was
// set decomposed still matches.
func TestDigestHA1PreparedPassword(t *testing.T) {
	db := openMem(t)
	acc := db.Accounts()
	if err := acc.Add(jid.MustParse("bob@example.test"), "pa\u0308ss\u00a0word"); err != nil {
		t.Fatal(err)
	}
	checkDigest(t, acc, "bob", "p\u00e4ss word")
}

// Accounts whose record has no HA1 (set before format 3) log in over XMPP
// and are refused SIP digest with ErrNoDigest until their password is set.
func TestFormat2AccountsHaveNoDigest(t *testing.T) {
	db := openMem(t)
	acc := db.Accounts()
	carol := jid.MustParse("carol@example.test")
	old := format2Record(t, "carol-pw", []byte("0123456789abcdef"), 4096)
	if err := acc.PutCredentials(carol, old); err != nil {
		t.Fatal(err)
	}
	if got, _ := acc.Credentials(carol); !bytes.Equal(got, old) {
		t.Error("a format-2 record was not stored as sent")
	}
	checkLogins(t, acc, "carol", "carol-pw")
	for _, alg := range []string{"MD5", "SHA-256"} {
		if _, err := acc.DigestHA1("carol", alg); !errors.Is(err, ErrNoDigest) {
			t.Errorf("%s: %v, want ErrNoDigest", alg, err)
		}
	}
	if !strings.Contains(ErrNoDigest.Error(), "set the password again") {
		t.Errorf("ErrNoDigest does not say what to do: %q", ErrNoDigest)
	}
	if err := acc.SetPassword(carol, "carol-pw"); err != nil {
		t.Fatal(err)
	}
	checkDigest(t, acc, "carol", "carol-pw")
	checkLogins(t, acc, "carol", "carol-pw")
}

// A database of schema version 2 is stamped 3 at Open with nothing
// rewritten (HA1 needs the password); the upgrade says, once and without
// names, how many accounts have no SIP yet.
func TestUpgradeFromSchema2(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Domain = "example.test"
	db, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	old := map[string][]byte{
		"dave@example.test": format2Record(t, "dave-pw", []byte("salt of dave"), 4096),
		"erin@example.test": format2Record(t, "erin-pw", []byte("salt of erin"), 4096),
	}
	err = db.Badger().Update(func(txn *badger.Txn) error {
		for user, rec := range old {
			if err := txn.Set(accountKey(user), rec); err != nil {
				return err
			}
		}
		return txn.Set(versionKey, []byte{2})
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
	line := logs.String()
	if !strings.Contains(line, "store upgraded") || !strings.Contains(line, "accounts_without_sip=2") ||
		!strings.Contains(line, "pushd user passwd") || !strings.Contains(line, "from_version=2") {
		t.Errorf("upgrade line: %q", line)
	}
	if strings.Contains(line, "dave") || strings.Contains(line, "erin") {
		t.Errorf("log names an account: %q", line)
	}
	for user, rec := range old {
		got, err := db.Accounts().Credentials(jid.MustParse(user))
		if err != nil || !bytes.Equal(got, rec) {
			t.Errorf("%s: record changed by the upgrade (%v)", user, err)
		}
	}
	checkLogins(t, db.Accounts(), "dave", "dave-pw")
	if _, err := db.Accounts().DigestHA1("dave", "MD5"); !errors.Is(err, ErrNoDigest) {
		t.Errorf("format-2 account after upgrade: %v", err)
	}
	if err := db.Accounts().Add(jid.MustParse("frank@example.test"), "frank-pw"); err != nil {
		t.Fatal(err)
	}
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
	var version []byte
	_ = db.Badger().View(func(txn *badger.Txn) error {
		item, err := txn.Get(versionKey)
		if err == nil {
			version, err = item.ValueCopy(nil)
		}
		return err
	})
	if !bytes.Equal(version, []byte{3}) {
		t.Errorf("schema version %v", version)
	}
	checkDigest(t, db.Accounts(), "frank", "frank-pw")
}

// Format-3 records travel node to node as they are (Credentials, the
// KindAccount record, PutCredentials) and keep their HA1; format-2 records
// still do; damaged format-3 records are refused.
func TestDigestCredentialsReplicate(t *testing.T) {
	src := openMem(t)
	alice := jid.MustParse("alice@example.test")
	carol := jid.MustParse("carol@example.test")
	if err := src.Accounts().Add(alice, "alice-pw"); err != nil {
		t.Fatal(err)
	}
	if err := src.Accounts().PutCredentials(carol, format2Record(t, "carol-pw", []byte("salt of carol"), 4096)); err != nil {
		t.Fatal(err)
	}
	dst := openMem(t)
	for _, user := range []jid.JID{alice, carol} {
		creds, err := src.Accounts().Credentials(user)
		if err != nil {
			t.Fatal(err)
		}
		wire := record.Append(nil, AccountRecord(user, creds))
		r, rest, err := record.Decode(wire)
		if err != nil || len(rest) != 0 {
			t.Fatalf("decode: %v (%d left)", err, len(rest))
		}
		got, body, deleted, err := DecodeAccount(r)
		if err != nil || deleted || !got.Equal(user) {
			t.Fatalf("DecodeAccount: %v %v %v", got, deleted, err)
		}
		if err := dst.Accounts().PutCredentials(got, body); err != nil {
			t.Fatal(err)
		}
		if stored, _ := dst.Accounts().Credentials(user); !bytes.Equal(stored, creds) {
			t.Errorf("%s: not stored as sent", user)
		}
	}
	checkDigest(t, dst.Accounts(), "alice", "alice-pw")
	checkLogins(t, dst.Accounts(), "alice", "alice-pw")
	checkLogins(t, dst.Accounts(), "carol", "carol-pw")
	if _, err := dst.Accounts().DigestHA1("carol", "SHA-256"); !errors.Is(err, ErrNoDigest) {
		t.Errorf("replicated format-2 account: %v", err)
	}

	rec, _ := src.Accounts().Credentials(alice)
	asFormat2 := append([]byte{2}, rec[1:]...) // format 2's length is shorter
	shortHA1 := rec[:len(rec)-1]
	longHA1 := append(append([]byte(nil), rec...), 0)
	noHA1 := append([]byte{3}, rec[1:len(rec)-md5.Size-sha256.Size]...)
	for name, bad := range map[string][]byte{"format 2 with HA1": asFormat2, "HA1 cut": shortHA1, "byte past HA1": longHA1, "format 3 without HA1": noHA1, "format 4": append([]byte{4}, rec[1:]...)} {
		if err := dst.Accounts().PutCredentials(alice, bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	checkDigest(t, dst.Accounts(), "alice", "alice-pw")
}
