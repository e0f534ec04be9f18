package digest

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"
	"time"
)

// Algorithm is a digest algorithm this package verifies (RFC 8760 §2.1).
type Algorithm uint8

// The algorithms offered, in the order the challenges list them.
const (
	SHA256 Algorithm = iota + 1
	MD5
)

// Offered is every algorithm challenged with, most preferred first (RFC
// 8760 §2.3: the UAS lists them in its order of preference).
var Offered = []Algorithm{SHA256, MD5}

// String is the algorithm's name on the wire, as the store's DigestHA1
// takes it.
func (a Algorithm) String() string {
	switch a {
	case SHA256:
		return "SHA-256"
	case MD5:
		return "MD5"
	}
	return fmt.Sprintf("Algorithm(%d)", uint8(a))
}

// ParseAlgorithm reads an algorithm parameter, in any case. An absent one
// (empty) is MD5 (RFC 7616 §3.3). The -sess variants and SHA-512-256 are
// not offered and so not accepted.
func ParseAlgorithm(s string) (Algorithm, bool) {
	switch {
	case s == "" || strings.EqualFold(s, "MD5"):
		return MD5, true
	case strings.EqualFold(s, "SHA-256"):
		return SHA256, true
	}
	return 0, false
}

// Size is the length of the algorithm's hash, and so of HA1, in bytes.
func (a Algorithm) Size() int {
	if a == MD5 {
		return md5.Size
	}
	return sha256.Size
}

func (a Algorithm) hash() hash.Hash {
	if a == MD5 {
		return md5.New()
	}
	return sha256.New()
}

// Config is what a Server needs. DefaultConfig documents each default.
type Config struct {
	// Realm is the realm challenged with and the only one accepted: the
	// node's domain, for which the store keeps HA1. Required.
	Realm string
	// Key signs the nonces; at least 16 bytes. Every node of a cluster
	// must have the same key to accept the others' nonces (a phone may
	// register to any node). A node restarted with another key answers
	// the nonces it issued before with stale=true, which costs a phone one
	// extra round trip and no prompt. Required.
	Key []byte
	// NonceLifetime is how long a nonce is accepted; after it the answer
	// is stale=true and the phone retries with a fresh one (default 5
	// min). It also bounds how long a captured request can be replayed
	// to a node that has not seen it.
	NonceLifetime time.Duration
	// ClockSkew is how far in the future a nonce may have been issued:
	// another node's clock may be ahead of this one's (default 5 s).
	ClockSkew time.Duration
	// ReplayCache bounds the nonces whose counts are remembered (default
	// 16384: about 2 MB, the nonces a node of 15 000 phones re-registering
	// every 10 minutes uses in a nonce lifetime, twice over).
	ReplayCache int
	// Algorithms are challenged with in this order, and only they are
	// accepted (default Offered: SHA-256, then MD5). Some phones, and
	// sipp 3.6, answer only the first challenge and know only MD5: for
	// them an operator puts MD5 first.
	Algorithms []Algorithm
	// Now is the clock (default time.Now); tests pass a fake one.
	Now func() time.Time
}

// DefaultConfig returns the defaults; Realm and Key have none.
func DefaultConfig() Config {
	return Config{
		NonceLifetime: 5 * time.Minute,
		ClockSkew:     5 * time.Second,
		ReplayCache:   16384,
		Now:           time.Now,
	}
}

// minKeyLen is the shortest nonce key accepted: 128 bits.
const minKeyLen = 16

// Server issues challenges and verifies credentials for one realm. Safe for
// concurrent use.
type Server struct {
	cfg    Config
	replay *replayCache
}

// New returns a Server for cfg; zero fields take their defaults.
func New(cfg Config) (*Server, error) {
	def := DefaultConfig()
	if cfg.Realm == "" {
		return nil, errors.New("digest: Config.Realm is empty")
	}
	if !validRealm(cfg.Realm) {
		return nil, errors.New("digest: Config.Realm has a quote, backslash or control character")
	}
	if len(cfg.Key) < minKeyLen {
		return nil, fmt.Errorf("digest: Config.Key has %d bytes, want at least %d", len(cfg.Key), minKeyLen)
	}
	cfg.Key = append([]byte(nil), cfg.Key...)
	if cfg.NonceLifetime <= 0 {
		cfg.NonceLifetime = def.NonceLifetime
	}
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = def.ClockSkew
	}
	if cfg.ReplayCache <= 0 {
		cfg.ReplayCache = def.ReplayCache
	}
	if cfg.Now == nil {
		cfg.Now = def.Now
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = Offered
	}
	cfg.Algorithms = slices.Clone(cfg.Algorithms)
	return &Server{cfg: cfg, replay: newReplayCache(cfg.ReplayCache)}, nil
}

// validRealm keeps the realm writable as a quoted string without escapes,
// so that what a phone echoes is byte for byte what is compared.
func validRealm(r string) bool {
	for i := 0; i < len(r); i++ {
		if c := r[i]; c < 0x20 || c == 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Challenge returns the value of one WWW-Authenticate (or
// Proxy-Authenticate) header field for alg with a fresh nonce. stale tells
// the phone its credentials were right but the nonce was not (Result
// Stale), so it retries without asking its user.
func (s *Server) Challenge(alg Algorithm, stale bool) string {
	return s.challenge(alg, s.newNonce(), stale)
}

// Challenges returns the header field values a 401 or 407 carries, one
// per algorithm of Offered in its order (SHA-256 first, RFC 8760 §2.3),
// sharing one nonce: a phone answers the first it supports.
func (s *Server) Challenges(stale bool) []string {
	nonce := s.newNonce()
	out := make([]string, len(s.cfg.Algorithms))
	for i, alg := range s.cfg.Algorithms {
		out[i] = s.challenge(alg, nonce, stale)
	}
	return out
}

func (s *Server) challenge(alg Algorithm, nonce string, stale bool) string {
	var b strings.Builder
	b.WriteString(`Digest realm="`)
	b.WriteString(s.cfg.Realm)
	b.WriteString(`", nonce="`)
	b.WriteString(nonce)
	b.WriteString(`", algorithm=`)
	b.WriteString(alg.String())
	b.WriteString(`, qop="auth"`)
	if stale {
		b.WriteString(", stale=true")
	}
	return b.String()
}

// A nonce is issued (8 bytes, Unix milliseconds, big-endian) ‖ random
// (12 bytes) ‖ the first 16 bytes of HMAC-SHA-256 over a label, the realm,
// issued and random; base64url without padding, 48 characters, which a
// quoted string carries unescaped. 96 random bits make two nonces of one
// millisecond distinct, so that the replay cache keys on them; 128 MAC bits
// leave forging out of reach.
const (
	nonceTimeLen = 8
	nonceRandLen = 12
	nonceMACLen  = 16
	nonceRawLen  = nonceTimeLen + nonceRandLen + nonceMACLen
)

var nonceEncoding = base64.RawURLEncoding

// nonceLabel keeps these MACs apart from anything else the key might sign.
const nonceLabel = "pushd sip digest nonce\x00"

func (s *Server) newNonce() string {
	var raw [nonceRawLen]byte
	binary.BigEndian.PutUint64(raw[:nonceTimeLen], uint64(s.cfg.Now().UnixMilli()))
	// crypto/rand.Read never returns an error (Go 1.24+).
	_, _ = rand.Read(raw[nonceTimeLen : nonceTimeLen+nonceRandLen])
	copy(raw[nonceTimeLen+nonceRandLen:], s.nonceMAC(raw[:nonceTimeLen+nonceRandLen]))
	return nonceEncoding.EncodeToString(raw[:])
}

func (s *Server) nonceMAC(issuedAndRandom []byte) []byte {
	m := hmac.New(sha256.New, s.cfg.Key)
	m.Write([]byte(nonceLabel))
	m.Write([]byte(s.cfg.Realm))
	m.Write([]byte{0})
	m.Write(issuedAndRandom)
	return m.Sum(nil)[:nonceMACLen]
}

// openNonce returns when nonce was issued, false if this key did not make
// it for this realm.
func (s *Server) openNonce(nonce string) (time.Time, bool) {
	if nonceEncoding.EncodedLen(nonceRawLen) != len(nonce) {
		return time.Time{}, false
	}
	raw, err := nonceEncoding.DecodeString(nonce)
	if err != nil || len(raw) != nonceRawLen {
		return time.Time{}, false
	}
	body := raw[:nonceTimeLen+nonceRandLen]
	if !hmac.Equal(raw[nonceTimeLen+nonceRandLen:], s.nonceMAC(body)) {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(binary.BigEndian.Uint64(raw[:nonceTimeLen]))), true
}
