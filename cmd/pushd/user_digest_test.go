package main

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	icholy "github.com/icholy/digest"

	"pushd/component/sip/digest"
	"pushd/internal/store"
)

// checkSIPDigest registers user over SIP digest the way a phone would: a
// challenge per offered algorithm, answered by a client library that
// computes the response from the password alone (github.com/icholy/digest,
// sipgo's), verified against the HA1 the store holds. The wrong password
// must fail.
func checkSIPDigest(t *testing.T, accounts *store.Accounts, realm, user, password string) {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	srv, err := digest.New(digest.Config{Realm: realm, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	ha1 := func(u string, alg digest.Algorithm) ([]byte, error) { return accounts.DigestHA1(u, alg.String()) }
	req := digest.Request{Method: "REGISTER", URI: "sip:" + realm}
	for _, alg := range digest.Offered {
		ch, err := icholy.ParseChallenge(srv.Challenge(alg, false))
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			password string
			want     digest.Outcome
		}{{password, digest.Accepted}, {password + "x", digest.Rejected}} {
			cred, err := icholy.Digest(ch, icholy.Options{Method: req.Method, URI: req.URI, Username: user, Password: tc.password})
			if err != nil {
				t.Fatal(err)
			}
			c, err := digest.Parse(cred.String())
			if err != nil {
				t.Fatal(err)
			}
			if res := srv.Verify(req, c, ha1); res.Outcome != tc.want {
				t.Errorf("%s %s with password %q: %v (%v), want %v", alg, user, tc.password, res.Outcome, res.Err, tc.want)
			}
		}
	}
}

// `pushd user add` and `pushd user passwd` on a data directory (no node
// running) give the account its SIP password: format-3 record, HA1 that a
// digest computed from the password alone verifies.
func TestUserCommandSetsSIPDigest(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "pushd.toml")
	// No node answers on the admin address: the command opens the data
	// directory itself.
	if err := os.WriteFile(cfgFile, []byte("data_dir = \"data\"\ndomain = \"sip.example.test\"\n[admin]\nlisten = \"127.0.0.1:1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runCmd(t, "pässword 1\n", "user", "add", "--config", cfgFile, "Henry"); err != nil {
		t.Fatalf("user add: %v", err)
	}
	open := func() *store.DB {
		db, err := store.Open(store.Config{Dir: filepath.Join(dir, "data", "db"), Domain: "sip.example.test"})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	db := open()
	rec, err := db.Accounts().Credentials(mustJID(t, "henry@sip.example.test"))
	if err != nil || rec[0] != 3 {
		t.Fatalf("record %x, %v", rec[:1], err)
	}
	// The digest username is the localpart as stored.
	checkSIPDigest(t, db.Accounts(), "sip.example.test", "henry", "pässword 1")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	if _, err := runCmd(t, "n3w\n", "user", "passwd", "--config", cfgFile, "henry@sip.example.test"); err != nil {
		t.Fatalf("user passwd: %v", err)
	}
	db = open()
	defer db.Close()
	checkSIPDigest(t, db.Accounts(), "sip.example.test", "henry", "n3w")
}
