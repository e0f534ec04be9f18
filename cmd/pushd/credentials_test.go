package main

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"path/filepath"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"mellium.im/sasl"

	"pushd/internal/peertest"
	"pushd/internal/store"
	"pushd/internal/xmpptest"
)

// writeSchema1Accounts makes the database a binary of schema version 1
// left behind: accounts as format-1 records holding the SCRAM salted
// passwords (computed with mellium's PBKDF2, as it did). The layout is
// spelled out here on purpose: it is the old binary's, not today's.
func writeSchema1Accounts(t *testing.T, dir, domain string, users map[string]string) {
	t.Helper()
	bdb, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.Update(func(txn *badger.Txn) error {
		for user, pw := range users {
			salt := []byte("salt of " + user)
			rec := binary.AppendUvarint([]byte{1}, 4096)
			rec = binary.AppendUvarint(rec, uint64(len(salt)))
			rec = append(rec, salt...)
			rec = append(rec, sasl.SCRAMSaltPassword(sha1.New, []byte(pw), salt, 4096)...)
			rec = append(rec, sasl.SCRAMSaltPassword(sha256.New, []byte(pw), salt, 4096)...)
			if err := txn.Set(append([]byte{store.SpaceAccount}, user+"@"+domain...), rec); err != nil {
				return err
			}
		}
		return txn.Set(append([]byte{store.SpaceMeta}, "version"...), []byte{1})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Close(); err != nil {
		t.Fatal(err)
	}
}

// Accounts created now and accounts an older binary stored with salted
// passwords (upgraded when the node opens its database) both log in with
// SCRAM-SHA-1, SCRAM-SHA-256 and PLAIN, and afterwards no record holds a
// salted password (BEHAVIOUR S1, S5).
func TestLoginNewAndMigratedAccounts(t *testing.T) {
	dir := t.TempDir()
	old := map[string]string{"olga": "olga-pässword", "oscar": "oscar-pw"}
	writeSchema1Accounts(t, filepath.Join(dir, "db"), "localhost", old)
	n := startTestNode(t, func(c *fileConfig) { c.DataDir = dir })
	n.addUser("nina", "nina-pw")
	all := map[string]string{"nina": "nina-pw", "olga": old["olga"], "oscar": old["oscar"]}

	for user, pw := range all {
		for _, mech := range []string{"SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"} {
			t.Run(user+"/"+mech, func(t *testing.T) {
				c := xmpptest.Dial(t, n.c2s(), "localhost")
				c.StartTLS()
				auth := func(p string) string {
					if mech == "PLAIN" {
						return c.AuthPlain(user, p)
					}
					return c.AuthSCRAM(mech, user, p)
				}
				if got := auth(pw + "x"); got != "not-authorized" {
					t.Errorf("wrong password: %q", got)
				}
				if got := auth(pw); got != "" {
					t.Fatalf("login: %q", got)
				}
				if jid := c.Bind("desk"); jid != user+"@localhost/desk" {
					t.Errorf("bound %q", jid)
				}
			})
		}
	}

	for user, pw := range all {
		rec, err := n.db.Accounts().Credentials(mustJID(t, user+"@localhost"))
		if err != nil {
			t.Fatal(err)
		}
		// New accounts get SIP digest HA1 (format 3); migrated ones cannot
		// (no password) and stay format 2.
		if want := map[bool]byte{true: 3, false: 2}[user == "nina"]; rec[0] != want {
			t.Errorf("%s: record format %d, want %d", user, rec[0], want)
		}
		// format | uvarint iterations | uvarint len(salt) | salt | keys
		_, i := binary.Uvarint(rec[1:])
		sl, j := binary.Uvarint(rec[1+i:])
		salt := rec[1+i+j:][:sl]
		for _, salted := range [][]byte{
			sasl.SCRAMSaltPassword(sha1.New, []byte(pw), salt, 4096),
			sasl.SCRAMSaltPassword(sha256.New, []byte(pw), salt, 4096),
		} {
			if bytes.Contains(rec, salted) {
				t.Errorf("%s: record holds a salted password", user)
			}
		}
	}
}

// slixmpp logs in to accounts that were migrated from salted passwords.
func TestSlixmppMigratedAccounts(t *testing.T) {
	dir := t.TempDir()
	writeSchema1Accounts(t, filepath.Join(dir, "db"), "localhost", map[string]string{"alice": "alice-pw", "bob": "bob-pw"})
	n := startTestNode(t, func(c *fileConfig) { c.DataDir = dir })
	res := peertest.Slixmpp(t, "chat.py", append(peertest.ServerArgs(t, n.c2s(), n.cfg.Domain),
		"--alice", "alice@localhost", "--alice-password", "alice-pw", "--bob", "bob@localhost", "--bob-password", "bob-pw", "--messages", "1")...)
	if !res.Bool("ok") {
		t.Fatalf("chat failed: %v", res)
	}
	for _, side := range []string{"alice", "bob"} {
		if m := res.Sub(side).String("mech"); m != "SCRAM-SHA-256" {
			t.Errorf("%s logged in with %q", side, m)
		}
	}
}
