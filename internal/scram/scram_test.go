package scram

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"mellium.im/sasl"
)

// The exchanges printed in RFC 5802 §5 (SHA-1) and RFC 7677 §3 (SHA-256):
// user "user", password "pencil", 4096 iterations.
var vectors = []struct {
	mech                     Mechanism
	salt                     string // base64
	serverNonce              string
	clientFirst, serverFirst string
	clientFinal, serverFinal string
}{
	{
		mech: SHA1, salt: "QSXCR+Q6sek8bf92", serverNonce: "3rfcNHYJY1ZVvWVs7j",
		clientFirst: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
		serverFirst: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
		clientFinal: "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
		serverFinal: "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
	},
	{
		mech: SHA256, salt: "W22ZaJ0SNY7soEsUEjb6gQ==", serverNonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
		clientFirst: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
		serverFirst: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		clientFinal: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		serverFinal: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
	},
}

func vectorCreds(t *testing.T, mech Mechanism, salt64 string) Credentials {
	t.Helper()
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := mech.DeriveKeys([]byte("pencil"), salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return Credentials{Salt: salt, Iterations: 4096, Keys: keys}
}

func TestRFCVectors(t *testing.T) {
	for _, v := range vectors {
		t.Run(v.mech.Name, func(t *testing.T) {
			creds := vectorCreds(t, v.mech, v.salt)
			var gotUser, gotAuthz string
			s := newServer(v.mech, func(u, a string) (Credentials, error) {
				gotUser, gotAuthz = u, a
				return creds, nil
			}, v.serverNonce)
			more, out, err := s.Step([]byte(v.clientFirst))
			if err != nil || !more || string(out) != v.serverFirst {
				t.Fatalf("first: %v %q %v, want %q", more, out, err, v.serverFirst)
			}
			if gotUser != "user" || gotAuthz != "" {
				t.Errorf("lookup(%q, %q)", gotUser, gotAuthz)
			}
			more, out, err = s.Step([]byte(v.clientFinal))
			if err != nil || more || string(out) != v.serverFinal {
				t.Fatalf("final: %v %q %v, want %q", more, out, err, v.serverFinal)
			}
			if _, _, err := s.Step(nil); !errors.Is(err, ErrState) {
				t.Errorf("step after the end: %v", err)
			}
		})
	}
}

// Changing any part of the client's messages fails the login, and the
// error carries no key material or client input.
func TestTampering(t *testing.T) {
	v := vectors[1]
	creds := vectorCreds(t, v.mech, v.salt)
	proof := v.clientFinal[strings.LastIndex(v.clientFinal, "p=")+2:]
	badProof := []byte(proof)
	badProof[0] ^= 1
	for _, tc := range []struct {
		name, first, final string
		want               error
	}{
		{"wrong proof", v.clientFirst, strings.Replace(v.clientFinal, proof, "eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", 1), ErrAuthn},
		{"nonce changed", v.clientFirst, strings.Replace(v.clientFinal, "k0,", "k1,", 1), ErrAuthn},
		{"binding says y", v.clientFirst, strings.Replace(v.clientFinal, "c=biws", "c=eSws", 1), ErrAuthn},
		{"first message changed", "n,,n=user,r=rOprNGfwEbeRWgbNEkqP", v.clientFinal, ErrAuthn},
		{"proof not last", v.clientFirst, v.clientFinal + ",x=1", ErrMalformed},
		{"proof too short", v.clientFirst, v.clientFinal[:strings.LastIndex(v.clientFinal, "p=")] + "p=AAAA", ErrMalformed},
		{"proof not base64", v.clientFirst, v.clientFinal[:strings.LastIndex(v.clientFinal, "p=")] + "p=!!", ErrMalformed},
		{"no channel binding", v.clientFirst, v.clientFinal[strings.Index(v.clientFinal, ",")+1:], ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(v.mech, func(string, string) (Credentials, error) { return creds, nil }, v.serverNonce)
			if _, _, err := s.Step([]byte(tc.first)); err != nil {
				t.Fatal(err)
			}
			_, out, err := s.Step([]byte(tc.final))
			if !errors.Is(err, tc.want) || out != nil {
				t.Fatalf("got %q, %v; want %v", out, err, tc.want)
			}
			if strings.Contains(err.Error(), proof[:8]) || strings.Contains(err.Error(), "rOpr") {
				t.Errorf("error quotes the client's message: %v", err)
			}
		})
	}
}

func TestClientFirstMessage(t *testing.T) {
	creds := vectorCreds(t, SHA256, vectors[1].salt)
	for _, tc := range []struct {
		in            string
		want          error
		user, authzid string
	}{
		{"n,,n=user,r=abc", nil, "user", ""},
		{"y,,n=user,r=abc", nil, "user", ""},
		{"n,a=admin=2Cx,n=us=3Der=2C,r=abc,x=ext", nil, "us=er,", "admin,x"},
		{"p=tls-exporter,,n=user,r=abc", ErrUnsupported, "", ""},
		{"n,,m=must,n=user,r=abc", ErrUnsupported, "", ""},
		{"q,,n=user,r=abc", ErrMalformed, "", ""},
		{"n,x=y,n=user,r=abc", ErrMalformed, "", ""},
		{"n,,n=us=41er,r=abc", ErrMalformed, "", ""},
		{"n,,n=,r=abc", ErrMalformed, "", ""},
		{"n,,n=user,r=", ErrMalformed, "", ""},
		{"n,,n=user,r=a\x7fb", ErrMalformed, "", ""},
		{"n,,n=user", ErrMalformed, "", ""},
		{"n,,r=abc,n=user", ErrMalformed, "", ""},
		{"n,,n=\xff,r=abc", ErrMalformed, "", ""},
		{"n", ErrMalformed, "", ""},
		{"", ErrMalformed, "", ""},
	} {
		var user, authzid string
		s := NewServer(SHA256, func(u, a string) (Credentials, error) {
			user, authzid = u, a
			return creds, nil
		})
		more, _, err := s.Step([]byte(tc.in))
		if !errors.Is(err, tc.want) || more != (tc.want == nil) {
			t.Errorf("%q: more=%v err=%v, want %v", tc.in, more, err, tc.want)
			continue
		}
		if user != tc.user || authzid != tc.authzid {
			t.Errorf("%q: lookup(%q, %q), want (%q, %q)", tc.in, user, authzid, tc.user, tc.authzid)
		}
		if err != nil {
			if _, _, err := s.Step([]byte("c=biws,r=abc,p=AAAA")); !errors.Is(err, ErrState) {
				t.Errorf("%q: step after a failure: %v", tc.in, err)
			}
		}
	}
}

func TestLookupRefuses(t *testing.T) {
	creds := vectorCreds(t, SHA256, vectors[1].salt)
	for _, tc := range []struct {
		name   string
		lookup Lookup
	}{
		{"unknown user", func(string, string) (Credentials, error) { return Credentials{}, errors.New("no such user") }},
		{"keys of the other hash", func(string, string) (Credentials, error) {
			return vectorCreds(t, SHA1, vectors[0].salt), nil
		}},
		{"no iterations", func(string, string) (Credentials, error) { c := creds; c.Iterations = 0; return c, nil }},
		{"no salt", func(string, string) (Credentials, error) { c := creds; c.Salt = nil; return c, nil }},
	} {
		s := NewServer(SHA256, tc.lookup)
		if _, out, err := s.Step([]byte("n,,n=user,r=abc")); !errors.Is(err, ErrAuthn) || out != nil {
			t.Errorf("%s: %q, %v", tc.name, out, err)
		}
	}
}

// mellium's SCRAM client (what xmpptest uses) against this server, with
// random nonces and a username that needs escaping. (mellium does not
// escape the authzid, so that one stays plain here.)
func TestMelliumClient(t *testing.T) {
	salt := []byte("0123456789abcdef")
	for _, tc := range []struct {
		client sasl.Mechanism
		mech   Mechanism
		pass   string
		ok     bool
	}{
		{sasl.ScramSha1, SHA1, "pässword", true},
		{sasl.ScramSha256, SHA256, "pässword", true},
		{sasl.ScramSha1, SHA1, "password", false},
		{sasl.ScramSha256, SHA256, "password", false},
	} {
		keys, err := tc.mech.DeriveKeys([]byte("pässword"), salt, 4096)
		if err != nil {
			t.Fatal(err)
		}
		client := sasl.NewClient(tc.client, sasl.Credentials(func() ([]byte, []byte, []byte) {
			return []byte("a,b=c"), []byte(tc.pass), []byte("alice@example.test")
		}))
		server := NewServer(tc.mech, func(u, a string) (Credentials, error) {
			if u != "a,b=c" || a != "alice@example.test" {
				t.Errorf("lookup(%q, %q)", u, a)
			}
			return Credentials{Salt: salt, Iterations: 4096, Keys: keys}, nil
		})
		_, msg, err := client.Step(nil)
		if err != nil {
			t.Fatal(err)
		}
		ok := false
		for {
			more, out, err := server.Step(msg)
			if err != nil {
				t.Logf("%s: %v (%q)", tc.mech.Name, err, msg)
				break
			}
			_, msg, err = client.Step(out)
			if err != nil {
				// The client checks the server's signature here.
				t.Errorf("%s: client refused the server: %v", tc.mech.Name, err)
				break
			}
			if !more {
				ok = true
				break
			}
		}
		if ok != tc.ok {
			t.Errorf("%s with %q: authenticated=%v", tc.mech.Name, tc.pass, ok)
		}
	}
}

// Keys from a salted password are those from the password: the migration
// of old records depends on it.
func TestKeysFromSalted(t *testing.T) {
	salt := []byte("salt")
	for _, m := range []Mechanism{SHA1, SHA256} {
		salted, err := m.SaltPassword([]byte("pencil"), salt, 4096)
		if err != nil {
			t.Fatal(err)
		}
		// Old records were salted by mellium's PBKDF2.
		if !bytes.Equal(salted, sasl.SCRAMSaltPassword(m.hash, []byte("pencil"), salt, 4096)) {
			t.Errorf("%s: salted password differs from mellium's", m.Name)
		}
		k, err := m.DeriveKeys([]byte("pencil"), salt, 4096)
		if err != nil {
			t.Fatal(err)
		}
		if !m.KeysFromSalted(salted).Equal(k) {
			t.Errorf("%s: keys differ", m.Name)
		}
		other, _ := m.DeriveKeys([]byte("pencil!"), salt, 4096)
		if k.Equal(other) {
			t.Errorf("%s: different passwords give equal keys", m.Name)
		}
	}
	if m, ok := ByName("SCRAM-SHA-256"); !ok || m.Name != SHA256.Name {
		t.Error("ByName SHA-256")
	}
	for _, n := range []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-512", "PLAIN"} {
		if _, ok := ByName(n); ok {
			t.Errorf("ByName(%q) accepted", n)
		}
	}
}
