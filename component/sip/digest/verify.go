package digest

import (
	"container/list"
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// HA1Func returns the HA1 of username for alg: H(username ":" realm ":"
// password), as bytes (Accounts.DigestHA1 of internal/store, the realm
// being the Server's). Any error fails the verification as a wrong password
// would, so that names cannot be probed; the Result carries it wrapped, so
// that the caller can tell store.ErrNoDigest (an account whose password
// predates SIP: worth one log line saying to set it again) from the rest.
type HA1Func func(username string, alg Algorithm) ([]byte, error)

// Request is what of the SIP request the response covers.
type Request struct {
	// Method is the request's method, e.g. "REGISTER".
	Method string
	// URI is the Request-URI as received.
	URI string
}

// Outcome is what to do with a request after Verify.
type Outcome uint8

const (
	// Rejected: wrong credentials. Count a failure (Limiter.Failed) and
	// answer 401/407 with fresh Challenges(false), or 403.
	Rejected Outcome = iota
	// Accepted: the phone knows the password for this nonce and request.
	Accepted
	// Stale: the response is right but the nonce is not acceptable any
	// more (expired, issued under another key, or its count already
	// seen). Not a failure: answer 401/407 with Challenges(true), and the
	// phone retries without prompting (RFC 7616 §3.3: stale only when the
	// response is valid).
	Stale
)

func (o Outcome) String() string {
	switch o {
	case Accepted:
		return "accepted"
	case Stale:
		return "stale"
	}
	return "rejected"
}

// Result is Verify's answer.
type Result struct {
	Outcome Outcome
	// Algorithm is the one the phone used (zero when not one offered).
	Algorithm Algorithm
	// Err says why it was not Accepted, for a log line: one of the errors
	// below, or the HA1Func's error wrapped. It names no user and carries
	// no value from the request.
	Err error
}

// Why a verification failed. Rejected results carry ErrUnsupported,
// ErrRealm, ErrURI, ErrResponse or the lookup's error; Stale ones ErrNonce,
// ErrExpired or ErrReplay.
var (
	ErrUnsupported = errors.New("digest: credentials use what was not offered")
	ErrRealm       = errors.New("digest: wrong realm")
	ErrURI         = errors.New("digest: uri is not the Request-URI")
	ErrResponse    = errors.New("digest: wrong response")
	ErrNonce       = errors.New("digest: nonce not issued under this key")
	ErrExpired     = errors.New("digest: nonce expired")
	ErrReplay      = errors.New("digest: nonce count already used")
)

// Verify checks credentials c sent with request r: the algorithm and qop
// are ones offered, the realm is the Server's, the uri is r's Request-URI,
// the response matches the one computed from ha1's HA1 (compared in
// constant time, and computed against a dummy HA1 for an unknown user),
// and, only for a right response, the nonce is this key's, young enough and
// its count unseen.
func (s *Server) Verify(r Request, c Credentials, ha1 HA1Func) Result {
	alg, ok := ParseAlgorithm(c.Algorithm)
	if !ok || !slices.Contains(s.cfg.Algorithms, alg) {
		return Result{Err: fmt.Errorf("%w: algorithm", ErrUnsupported)}
	}
	res := Result{Algorithm: alg}
	switch {
	case c.Userhash:
		res.Err = fmt.Errorf("%w: userhash", ErrUnsupported)
	case !strings.EqualFold(c.Qop, "auth"):
		// Without qop (RFC 2069) there is no cnonce or count; auth-int was
		// not offered.
		res.Err = fmt.Errorf("%w: qop other than auth", ErrUnsupported)
	case c.Realm != s.cfg.Realm:
		res.Err = ErrRealm
	case !sameResource(c.URI, r.URI):
		res.Err = ErrURI
	}
	if res.Err != nil {
		return res
	}
	nc, ok := parseNC(c.NC)
	if !ok {
		// Parse refuses this; credentials built by hand may not.
		res.Err = fmt.Errorf("%w: nc", ErrUnsupported)
		return res
	}
	got := make([]byte, alg.Size())
	if len(c.Response) != 2*alg.Size() {
		res.Err = ErrResponse
		return res
	}
	if _, err := hex.Decode(got, []byte(c.Response)); err != nil {
		res.Err = ErrResponse
		return res
	}

	key, lookupErr := ha1(c.Username, alg)
	if lookupErr == nil && len(key) != alg.Size() {
		lookupErr = fmt.Errorf("digest: HA1 of %d bytes for %s", len(key), alg)
	}
	if lookupErr != nil {
		// Same work as for a known user: timing does not tell them apart.
		key = make([]byte, alg.Size())
	}
	want := response(alg, key, r.Method, c)
	if !hmac.Equal(got, want) || lookupErr != nil {
		if lookupErr != nil {
			res.Err = fmt.Errorf("digest: credentials of the user: %w", lookupErr)
		} else {
			res.Err = ErrResponse
		}
		return res
	}

	now := s.cfg.Now()
	issued, ok := s.openNonce(c.Nonce)
	res.Outcome = Stale
	switch age := now.Sub(issued); {
	case !ok:
		res.Err = ErrNonce
	case age > s.cfg.NonceLifetime || age < -s.cfg.ClockSkew:
		res.Err = ErrExpired
	case !s.replay.fresh(c.Nonce, nc, issued.Add(s.cfg.NonceLifetime+s.cfg.ClockSkew), now):
		res.Err = ErrReplay
	default:
		res.Outcome = Accepted
	}
	return res
}

// response is RFC 7616 §3.4.1 for qop=auth: H(hex(HA1) ":" nonce ":" nc
// ":" cnonce ":" qop ":" hex(H(method ":" uri))), the uri being the one the
// phone hashed.
func response(alg Algorithm, ha1 []byte, method string, c Credentials) []byte {
	h := alg.hash()
	h.Write([]byte(method))
	h.Write([]byte{':'})
	h.Write([]byte(c.URI))
	ha2 := hex.EncodeToString(h.Sum(nil))

	h = alg.hash()
	h.Write([]byte(hex.EncodeToString(ha1)))
	for _, part := range []string{c.Nonce, c.NC, c.Cnonce, c.Qop, ha2} {
		h.Write([]byte{':'})
		h.Write([]byte(part))
	}
	return h.Sum(nil)
}

// sameResource reports whether the digest uri names the Request-URI (RFC
// 7616 §3.4.6). Phones copy the Request-URI, but not all copy its
// parameters (sipgo sends scheme, user, host and port only), so the two are
// compared without the parameters and headers after the host, scheme and
// host in any case. The response covers the uri as sent, so this leniency
// lets nothing through that the phone did not sign.
func sameResource(digestURI, requestURI string) bool {
	return digestURI == requestURI || strings.EqualFold(uriBase(digestURI), uriBase(requestURI))
}

// uriBase cuts a SIP URI at the parameters or headers that follow its host
// (a ';' in the user part stays).
func uriBase(u string) string {
	from := strings.LastIndexByte(u, '@') + 1
	if i := strings.IndexAny(u[from:], ";?"); i >= 0 {
		return u[:from+i]
	}
	return u
}

// replayCache remembers, per accepted nonce, the counts seen: the highest
// and a bitmap of the 64 below it, as IPsec's anti-replay window does, so
// that requests sent in parallel may arrive out of order but none twice.
// Bounded: the least recently accepted nonce goes first.
type replayCache struct {
	mu    sync.Mutex
	max   int
	byKey map[string]*list.Element // of *nonceCounts
	order *list.List               // least recently used at the front
}

type nonceCounts struct {
	nonce   string
	expires time.Time // past it the nonce is refused anyway
	top     uint32
	seen    uint64 // bit i: count top-i was used
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, byKey: map[string]*list.Element{}, order: list.New()}
}

// fresh records count nc of nonce and reports whether it was unseen.
func (c *replayCache) fresh(nonce string, nc uint32, expires, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	// The front is the least recently used, so usually the first to
	// expire: dropping expired ones from there keeps the work per call
	// small.
	for e := c.order.Front(); e != nil && !now.Before(e.Value.(*nonceCounts).expires); e = c.order.Front() {
		c.remove(e)
	}
	if e, ok := c.byKey[nonce]; ok {
		n := e.Value.(*nonceCounts)
		c.order.MoveToBack(e)
		switch {
		case nc > n.top:
			if shift := nc - n.top; shift < 64 {
				n.seen = n.seen<<shift | 1
			} else {
				n.seen = 1
			}
			n.top = nc
			return true
		case n.top-nc >= 64:
			return false // older than the window: cannot tell, refuse
		default:
			bit := uint64(1) << (n.top - nc)
			if n.seen&bit != 0 {
				return false
			}
			n.seen |= bit
			return true
		}
	}
	for len(c.byKey) >= c.max {
		c.remove(c.order.Front())
	}
	c.byKey[nonce] = c.order.PushBack(&nonceCounts{nonce: nonce, expires: expires, top: nc, seen: 1})
	return true
}

func (c *replayCache) remove(e *list.Element) {
	delete(c.byKey, e.Value.(*nonceCounts).nonce)
	c.order.Remove(e)
}
