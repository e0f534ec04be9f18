// Package redact is the one place personal data (JIDs, phone numbers,
// names) is turned into something a log line may carry (BEHAVIOUR S3).
//
// A redacted value is a short keyed hash: the same person gives the same
// token within one process, so an operator can follow one user through a
// log, but the token cannot be turned back into the name.
package redact

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"strings"
)

// Redactor hashes personal data under a key that never leaves the process.
type Redactor struct {
	key []byte
}

// New returns a Redactor with a fresh random key.
func New() *Redactor {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return &Redactor{key: k}
}

// NewWithKey returns a Redactor whose tokens are stable across restarts
// and nodes that share key.
func NewWithKey(key []byte) *Redactor {
	return &Redactor{key: append([]byte(nil), key...)}
}

// Token returns the redacted form of a personal value. Case is folded so
// that user@Example and user@example give one token.
func (r *Redactor) Token(value string) string {
	if value == "" {
		return ""
	}
	m := hmac.New(sha256.New, r.key)
	m.Write([]byte(strings.ToLower(value)))
	return "~" + hex.EncodeToString(m.Sum(nil)[:6])
}

// Attr is a slog attribute carrying the redacted value under key.
func (r *Redactor) Attr(key, value string) slog.Attr {
	return slog.String(key, r.Token(value))
}
