// Package scram is the server side of SCRAM-SHA-1 and SCRAM-SHA-256
// (RFC 5802, RFC 7677) verifying from StoredKey and ServerKey alone, and the
// derivation of those keys (BEHAVIOUR S5).
//
// mellium.im/sasl's server needs the salted password, which is
// password-equivalent: whoever holds it can compute ClientKey and log in.
// StoredKey = H(ClientKey) is not: it checks a proof but cannot make one.
// This package is what lets the account store keep only the two keys.
//
// It owns no storage and no network; it never puts key material or client
// input into its errors (they reach logs). Channel binding (-PLUS) is not
// offered, so a client asking for it is refused.
package scram

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
)

// Mechanism is one SCRAM hash family.
type Mechanism struct {
	// Name is the SASL mechanism name, e.g. "SCRAM-SHA-256".
	Name string
	hash func() hash.Hash
}

var (
	// SHA1 is SCRAM-SHA-1 (RFC 5802).
	SHA1 = Mechanism{Name: "SCRAM-SHA-1", hash: sha1.New}
	// SHA256 is SCRAM-SHA-256 (RFC 7677).
	SHA256 = Mechanism{Name: "SCRAM-SHA-256", hash: sha256.New}
)

// ByName returns the mechanism of a SASL name, false for any other
// (including the -PLUS variants, which pushd does not offer).
func ByName(name string) (Mechanism, bool) {
	switch name {
	case SHA1.Name:
		return SHA1, true
	case SHA256.Name:
		return SHA256, true
	}
	return Mechanism{}, false
}

// Size is the length of the mechanism's keys and proofs.
func (m Mechanism) Size() int { return m.hash().Size() }

// Keys is what a server keeps to verify a SCRAM login: enough to check a
// client's proof and to prove itself, not enough to log in.
type Keys struct {
	StoredKey []byte
	ServerKey []byte
}

// Credentials is one account's record for one mechanism.
type Credentials struct {
	Salt       []byte
	Iterations int
	Keys
}

// SaltPassword is Hi(password, salt, i) of RFC 5802 §2.2 (PBKDF2 with HMAC).
// The password must already be prepared (PRECIS OpaqueString): that is the
// caller's, which also decides what an unacceptable password is.
func (m Mechanism) SaltPassword(password, salt []byte, iterations int) ([]byte, error) {
	k, err := pbkdf2.Key(m.hash, string(password), salt, iterations, m.Size())
	if err != nil {
		return nil, fmt.Errorf("scram: %s salt password: %w", m.Name, err)
	}
	return k, nil
}

// KeysFromSalted derives StoredKey and ServerKey from a salted password
// (RFC 5802 §3). It is how records that kept the salted password are
// converted without knowing the password.
func (m Mechanism) KeysFromSalted(salted []byte) Keys {
	clientKey := m.hmac(salted, []byte("Client Key"))
	h := m.hash()
	h.Write(clientKey)
	return Keys{StoredKey: h.Sum(nil), ServerKey: m.hmac(salted, []byte("Server Key"))}
}

// DeriveKeys is SaltPassword followed by KeysFromSalted.
func (m Mechanism) DeriveKeys(password, salt []byte, iterations int) (Keys, error) {
	salted, err := m.SaltPassword(password, salt, iterations)
	if err != nil {
		return Keys{}, err
	}
	return m.KeysFromSalted(salted), nil
}

// Equal reports, in constant time, whether k and o are the same keys.
func (k Keys) Equal(o Keys) bool {
	// Both compared whatever the first gives, so timing says nothing about
	// which one differed.
	a := hmac.Equal(k.StoredKey, o.StoredKey)
	b := hmac.Equal(k.ServerKey, o.ServerKey)
	return a && b
}

func (m Mechanism) hmac(key, msg []byte) []byte {
	h := hmac.New(m.hash, key)
	h.Write(msg)
	return h.Sum(nil)
}

var (
	// ErrAuthn: the client's proof is wrong or the user cannot log in.
	ErrAuthn = errors.New("scram: authentication failed")
	// ErrMalformed: the client's message does not follow RFC 5802 §7.
	ErrMalformed = errors.New("scram: malformed client message")
	// ErrUnsupported: the client asked for channel binding or a mandatory
	// extension, neither of which is offered.
	ErrUnsupported = errors.New("scram: unsupported client request")
	// ErrState: Step called after the exchange ended.
	ErrState = errors.New("scram: exchange already over")
)
