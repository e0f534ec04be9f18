// Package payload owns "pushd payload v1": the plaintext summary a push
// carries, its AES-256-GCM sealing under the device's key, and the provider
// bodies (APNS JSON, FCM data map) that carry the sealed form.
//
// It must never send anything, log anything or keep state: it is pure
// functions shared by jsm, component/sip and component/dispatch. Personal
// fields (from, name, body, node, call-id) leave this package only inside
// the ciphertext (BEHAVIOUR S2); the only clear fields it writes are the
// format version, the tracking id and fixed generic alert texts.
package payload

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// Version is the format version written in clear as "v".
const Version = 1

// KeySize is the size of a device key: AES-256.
const KeySize = 32

// NonceSize and TagSize are the GCM parameters of the sealed form.
const (
	NonceSize = 12
	TagSize   = 16
)

// Type says what a push is about. It is inside the ciphertext; the APNS body
// only reveals the coarse kind through the generic alert it picks (message or
// call), which is a service field, not personal data.
type Type string

// The push types of BEHAVIOUR M3 and C2–C6.
const (
	TypeMessage           Type = "message"
	TypeCall              Type = "call"
	TypeMissedCall        Type = "missed-call"
	TypeCancelled         Type = "cancelled"
	TypeAnsweredElsewhere Type = "answered-elsewhere"
	// TypeDeclinedElsewhere: another device of a shared line declined the
	// call (600/603), so the pushed phone closes its call screen (C6, C8).
	TypeDeclinedElsewhere Type = "declined-elsewhere"
	// TypeRegRefresh asks a sleeping phone to refresh its SIP registration
	// before the binding expires (RFC 8599 §5.4, C8). It always rides the
	// message channel: on APNS as a background push (content-available, no
	// alert, priority 5), because a VoIP push must report a call; on FCM
	// as a high-priority data message like any other.
	TypeRegRefresh Type = "reg-refresh"
)

// Valid reports whether t is one of the defined types.
func (t Type) Valid() bool {
	switch t {
	case TypeMessage, TypeCall, TypeMissedCall, TypeCancelled, TypeAnsweredElsewhere,
		TypeDeclinedElsewhere, TypeRegRefresh:
		return true
	}
	return false
}

// IsCall reports whether t belongs to the call family (C2–C6).
func (t Type) IsCall() bool { return t.Valid() && t != TypeMessage && t != TypeRegRefresh }

// Payload is the plaintext of pushd payload v1. Field names on the wire are
// fixed by docs/payload.md; app developers decode them.
type Payload struct {
	Type   Type   `json:"type"`
	From   string `json:"from,omitempty"`    // sender JID or caller number
	Name   string `json:"name,omitempty"`    // display name of the sender / caller
	Body   string `json:"body,omitempty"`    // last message body
	Count  int    `json:"count,omitempty"`   // pending message count
	Node   string `json:"node,omitempty"`    // host the device should reconnect to
	CallID string `json:"call-id,omitempty"` // SIP call id
	TS     int64  `json:"ts,omitempty"`      // Unix milliseconds of the event
}

// HasPersonal reports whether p carries any field that must never travel in
// clear (S2). Type, count and timestamp are service fields.
func (p Payload) HasPersonal() bool {
	return p.From != "" || p.Name != "" || p.Body != "" || p.Node != "" || p.CallID != ""
}

// Strip returns p without its personal fields: what a device that left no
// key gets (a content-free wake-up).
func Strip(p Payload) Payload {
	return Payload{Type: p.Type, Count: p.Count, TS: p.TS}
}

// Errors returned by Open and Seal.
var (
	ErrMalformed = errors.New("payload: malformed sealed payload")
	ErrAuth      = errors.New("payload: authentication failed (wrong key or tampered)")
)

// Seal encrypts p under key and returns the "enc" field: standard base64 of
// nonce(12) ‖ ciphertext ‖ tag(16), AES-256-GCM, no associated data.
func Seal(key [KeySize]byte, p Payload) (string, error) {
	var nonce [NonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", fmt.Errorf("payload: nonce: %w", err)
	}
	return sealWithNonce(key, nonce, p)
}

// sealWithNonce is Seal with a chosen nonce; only tests use a fixed nonce,
// to produce the documented example vector.
func sealWithNonce(key [KeySize]byte, nonce [NonceSize]byte, p Payload) (string, error) {
	plain, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("payload: encode: %w", err)
	}
	aead, err := newGCM(key)
	if err != nil {
		return "", err
	}
	out := make([]byte, 0, NonceSize+len(plain)+TagSize)
	out = append(out, nonce[:]...)
	out = aead.Seal(out, nonce[:], plain, nil)
	return base64.StdEncoding.EncodeToString(out), nil
}

// Open decrypts an "enc" field. pushd itself never needs it; it exists for
// tests and as the reference for app developers.
func Open(key [KeySize]byte, enc string) (Payload, error) {
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return Payload{}, fmt.Errorf("%w: base64: %v", ErrMalformed, err)
	}
	if len(raw) < NonceSize+TagSize {
		return Payload{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(raw))
	}
	aead, err := newGCM(key)
	if err != nil {
		return Payload{}, err
	}
	plain, err := aead.Open(nil, raw[:NonceSize], raw[NonceSize:], nil)
	if err != nil {
		return Payload{}, ErrAuth
	}
	var p Payload
	if err := json.Unmarshal(plain, &p); err != nil {
		return Payload{}, fmt.Errorf("%w: json: %v", ErrMalformed, err)
	}
	return p, nil
}

// ValidEnc reports whether enc has the shape of a sealed payload (base64,
// long enough for nonce and tag). Used for router-encrypted pass-through,
// which pushd cannot decrypt but must not forward if it is not ciphertext.
func ValidEnc(enc string) bool {
	raw, err := base64.StdEncoding.DecodeString(enc)
	return err == nil && len(raw) >= NonceSize+TagSize
}

// KeyFromBase64 decodes a device key as registered (XEP-0050 field "key").
func KeyFromBase64(s string) ([KeySize]byte, error) {
	var k [KeySize]byte
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return k, fmt.Errorf("payload: key: %w", err)
	}
	if len(raw) != KeySize {
		return k, fmt.Errorf("payload: key: %d bytes, want %d", len(raw), KeySize)
	}
	copy(k[:], raw)
	return k, nil
}

func newGCM(key [KeySize]byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("payload: cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("payload: gcm: %w", err)
	}
	return aead, nil
}
