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
	"sync"
)

// Redactor hashes personal data under a key that never leaves the process.
// Safe for concurrent use.
type Redactor struct {
	key []byte

	// Recent tokens: the same few values (a router's domain, the users
	// that publish) come back on the line every push writes, where the
	// keyed hash is a measurable cost.
	mu    sync.Mutex
	cache map[string]string
}

// cacheLimit bounds the cache; past it the cache starts afresh.
const cacheLimit = 4096

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
	r.mu.Lock()
	t, ok := r.cache[value]
	r.mu.Unlock()
	if ok {
		return t
	}
	m := hmac.New(sha256.New, r.key)
	m.Write([]byte(strings.ToLower(value)))
	t = "~" + hex.EncodeToString(m.Sum(nil)[:6])
	r.mu.Lock()
	if r.cache == nil || len(r.cache) >= cacheLimit {
		r.cache = make(map[string]string)
	}
	r.cache[value] = t
	r.mu.Unlock()
	return t
}

// Attr is a slog attribute carrying the redacted value under key.
func (r *Redactor) Attr(key, value string) slog.Attr {
	return slog.String(key, r.Token(value))
}
