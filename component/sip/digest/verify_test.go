package digest

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	icholy "github.com/icholy/digest"
)

// clock is a fake clock that moves only when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const testRealm = "example.test"

var testKey = []byte("0123456789abcdef0123456789abcdef")

func newTestServer(t *testing.T, clk *clock, mod func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Realm = testRealm
	cfg.Key = testKey
	cfg.Now = clk.Now
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// plainHA1 is HA1 computed the obvious way, apart from the package.
func plainHA1(alg Algorithm, user, realm, password string) []byte {
	s := user + ":" + realm + ":" + password
	if alg == MD5 {
		h := md5.Sum([]byte(s))
		return h[:]
	}
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// users is an HA1Func over a few passwords, for the test realm.
func users(passwords map[string]string) HA1Func {
	return func(u string, alg Algorithm) ([]byte, error) {
		pw, ok := passwords[u]
		if !ok {
			return nil, errNoSuchUser
		}
		return plainHA1(alg, u, testRealm, pw), nil
	}
}

var errNoSuchUser = errors.New("test: no such user")

var alice = users(map[string]string{"alice": "alice-pw"})

const registerURI = "sip:example.test"

// phone answers a challenge the way a real client does: icholy/digest, the
// library sipgo's client uses.
func phone(t *testing.T, challenge, user, password string, count int) string {
	t.Helper()
	ch, err := icholy.ParseChallenge(challenge)
	if err != nil {
		t.Fatalf("client cannot parse the challenge: %v", err)
	}
	cred, err := icholy.Digest(ch, icholy.Options{Method: "REGISTER", URI: registerURI, Username: user, Password: password, Count: count})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	return cred.String()
}

func verify(t *testing.T, s *Server, header string, ha1 HA1Func) Result {
	t.Helper()
	c, err := Parse(header)
	if err != nil {
		t.Fatalf("Parse(%q): %v", header, err)
	}
	return s.Verify(Request{Method: "REGISTER", URI: registerURI}, c, ha1)
}

func wantResult(t *testing.T, got Result, outcome Outcome, err error) {
	t.Helper()
	if got.Outcome != outcome || (err == nil) != (got.Err == nil) || (err != nil && !errors.Is(got.Err, err)) {
		t.Fatalf("got %v (%v), want %v (%v)", got.Outcome, got.Err, outcome, err)
	}
}

// RFC 7616 §3.9.1: the HTTP example, for MD5 and SHA-256. Its nonce is not
// this server's, so a right response gives Stale (a wrong one would be
// Rejected): the computation matches the RFC's.
func TestRFC7616Example(t *testing.T) {
	const (
		nonce  = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
		cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
		realm  = "http-auth@example.org"
		uri    = "/dir/index.html"
		// Erratum 4495: "Circle of Life", lower-case "of".
		password = "Circle of Life"
	)
	s := newTestServer(t, newClock(), func(c *Config) { c.Realm = realm })
	for _, tc := range []struct {
		alg      Algorithm
		response string
	}{
		{MD5, "8ca523f5e9506fed4657c9700eebdbec"},
		{SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"},
	} {
		t.Run(tc.alg.String(), func(t *testing.T) {
			header := fmt.Sprintf(`Digest username="Mufasa", realm="%s", uri="%s", algorithm=%s, nonce="%s", nc=00000001, cnonce="%s", qop=auth, response="%s", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"`,
				realm, uri, tc.alg, nonce, cnonce, tc.response)
			c, err := Parse(header)
			if err != nil {
				t.Fatal(err)
			}
			ha1 := func(u string, alg Algorithm) ([]byte, error) {
				if u != "Mufasa" || alg != tc.alg {
					return nil, errNoSuchUser
				}
				return plainHA1(alg, u, realm, password), nil
			}
			if got := hex.EncodeToString(response(tc.alg, plainHA1(tc.alg, "Mufasa", realm, password), "GET", c)); got != tc.response {
				t.Fatalf("response %s, RFC has %s", got, tc.response)
			}
			wantResult(t, s.Verify(Request{Method: "GET", URI: uri}, c, ha1), Stale, ErrNonce)
			wrong := func(u string, alg Algorithm) ([]byte, error) { return plainHA1(alg, u, realm, "Circle Of Life"), nil }
			wantResult(t, s.Verify(Request{Method: "GET", URI: uri}, c, wrong), Rejected, ErrResponse)
			wantResult(t, s.Verify(Request{Method: "POST", URI: uri}, c, ha1), Rejected, ErrResponse)
		})
	}
}

func TestChallenges(t *testing.T) {
	s := newTestServer(t, newClock(), nil)
	got := s.Challenges(false)
	if len(got) != 2 {
		t.Fatalf("%d challenges", len(got))
	}
	var nonces []string
	for i, want := range []string{"SHA-256", "MD5"} {
		ch, err := icholy.ParseChallenge(got[i])
		if err != nil {
			t.Fatalf("%q: %v", got[i], err)
		}
		if ch.Algorithm != want || ch.Realm != testRealm || !ch.SupportsQOP("auth") || len(ch.QOP) != 1 || ch.Stale || ch.Opaque != "" {
			t.Errorf("challenge %d: %+v", i, ch)
		}
		nonces = append(nonces, ch.Nonce)
	}
	if nonces[0] != nonces[1] || len(nonces[0]) != 48 {
		t.Errorf("nonces %q", nonces)
	}
	if n := s.Challenges(false); strings.Contains(n[0], nonces[0]) {
		t.Error("a second 401 reused the nonce")
	}
	for _, v := range s.Challenges(true) {
		if ch, err := icholy.ParseChallenge(v); err != nil || !ch.Stale {
			t.Errorf("stale challenge %q: %v", v, err)
		}
	}
	if ch, err := icholy.ParseChallenge(s.Challenge(MD5, false)); err != nil || ch.Algorithm != "MD5" {
		t.Errorf("Challenge(MD5): %+v %v", ch, err)
	}
}

func TestConfig(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"no realm":     func(c *Config) { c.Realm = "" },
		"quoted realm": func(c *Config) { c.Realm = `a"b` },
		"short key":    func(c *Config) { c.Key = []byte("short") },
		"no key":       func(c *Config) { c.Key = nil },
	} {
		cfg := Config{Realm: testRealm, Key: testKey}
		mod(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	s, err := New(Config{Realm: testRealm, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	if s.cfg.NonceLifetime != 5*time.Minute || s.cfg.NonceLifetime != def.NonceLifetime || s.cfg.ReplayCache != def.ReplayCache || s.cfg.Now == nil {
		t.Errorf("defaults not applied: %+v", s.cfg)
	}
}

// A real client answers each algorithm; a count already used is Stale, not
// a failure; counts may arrive out of order.
func TestVerifyRoundTrip(t *testing.T) {
	s := newTestServer(t, newClock(), nil)
	for i, alg := range Offered {
		t.Run(alg.String(), func(t *testing.T) {
			ch := s.Challenges(false)[i]
			first := phone(t, ch, "alice", "alice-pw", 1)
			res := verify(t, s, first, alice)
			wantResult(t, res, Accepted, nil)
			if res.Algorithm != alg {
				t.Errorf("algorithm %v", res.Algorithm)
			}
			wantResult(t, verify(t, s, first, alice), Stale, ErrReplay)
			third := phone(t, ch, "alice", "alice-pw", 3)
			wantResult(t, verify(t, s, third, alice), Accepted, nil)
			wantResult(t, verify(t, s, phone(t, ch, "alice", "alice-pw", 2), alice), Accepted, nil)
			wantResult(t, verify(t, s, third, alice), Stale, ErrReplay)
			wantResult(t, verify(t, s, phone(t, ch, "alice", "alice-pw", 100), alice), Accepted, nil)
			// More than the window behind the highest: cannot tell, refused.
			wantResult(t, verify(t, s, phone(t, ch, "alice", "alice-pw", 4), alice), Stale, ErrReplay)
		})
	}
}

func TestVerifyRefuses(t *testing.T) {
	clk := newClock()
	s := newTestServer(t, clk, nil)
	ch := s.Challenge(SHA256, false)
	good := phone(t, ch, "alice", "alice-pw", 1)
	goodCreds, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	reg := Request{Method: "REGISTER", URI: registerURI}
	edit := func(f func(*Credentials)) Credentials {
		c := goodCreds
		f(&c)
		return c
	}
	errNoDigest := errors.New("test: account without HA1")
	for _, tc := range []struct {
		name    string
		req     Request
		creds   Credentials
		ha1     HA1Func
		outcome Outcome
		err     error
	}{
		{"wrong password", reg, mustParse(t, phone(t, ch, "alice", "wrong", 1)), alice, Rejected, ErrResponse},
		{"unknown user", reg, mustParse(t, phone(t, ch, "mallory", "alice-pw", 1)), alice, Rejected, errNoSuchUser},
		{"lookup error passes through", reg, goodCreds, func(string, Algorithm) ([]byte, error) { return nil, errNoDigest }, Rejected, errNoDigest},
		{"HA1 of the wrong size", reg, goodCreds, func(string, Algorithm) ([]byte, error) { return make([]byte, 16), nil }, Rejected, nil},
		{"wrong realm", reg, edit(func(c *Credentials) { c.Realm = "other.test" }), alice, Rejected, ErrRealm},
		{"other Request-URI", Request{Method: "REGISTER", URI: "sip:other.test"}, goodCreds, alice, Rejected, ErrURI},
		{"other method", Request{Method: "INVITE", URI: registerURI}, goodCreds, alice, Rejected, ErrResponse},
		{"tampered nonce", reg, edit(func(c *Credentials) { c.Nonce = flip(c.Nonce) }), alice, Rejected, ErrResponse},
		{"tampered cnonce", reg, edit(func(c *Credentials) { c.Cnonce += "x" }), alice, Rejected, ErrResponse},
		{"tampered count", reg, edit(func(c *Credentials) { c.NC = "00000002" }), alice, Rejected, ErrResponse},
		{"response cut", reg, edit(func(c *Credentials) { c.Response = c.Response[:32] }), alice, Rejected, ErrResponse},
		{"response not hex", reg, edit(func(c *Credentials) { c.Response = strings.Repeat("zz", 32) }), alice, Rejected, ErrResponse},
		{"MD5 response for SHA-256", reg, edit(func(c *Credentials) { c.Algorithm = "MD5" }), alice, Rejected, ErrResponse},
		{"no qop (RFC 2069)", reg, edit(func(c *Credentials) { c.Qop, c.NC, c.Cnonce = "", "", "" }), alice, Rejected, ErrUnsupported},
		{"auth-int", reg, edit(func(c *Credentials) { c.Qop = "auth-int" }), alice, Rejected, ErrUnsupported},
		{"userhash", reg, edit(func(c *Credentials) { c.Userhash = true }), alice, Rejected, ErrUnsupported},
		{"SHA-512-256", reg, edit(func(c *Credentials) { c.Algorithm = "SHA-512-256" }), alice, Rejected, ErrUnsupported},
		{"MD5-sess", reg, edit(func(c *Credentials) { c.Algorithm = "MD5-sess" }), alice, Rejected, ErrUnsupported},
		{"count 0 built by hand", reg, edit(func(c *Credentials) { c.NC = "00000000" }), alice, Rejected, ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := s.Verify(tc.req, tc.creds, tc.ha1)
			if res.Outcome != tc.outcome || (tc.err != nil && !errors.Is(res.Err, tc.err)) || res.Err == nil {
				t.Fatalf("got %v (%v), want %v (%v)", res.Outcome, res.Err, tc.outcome, tc.err)
			}
			if strings.Contains(res.Err.Error(), "alice") || strings.Contains(res.Err.Error(), "mallory") {
				t.Errorf("error names the user: %v", res.Err)
			}
		})
	}
	// None of the above used up the count.
	wantResult(t, s.Verify(reg, goodCreds, alice), Accepted, nil)
}

func mustParse(t *testing.T, h string) Credentials {
	t.Helper()
	c, err := Parse(h)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// flip changes one character of a nonce, keeping it base64url.
func flip(s string) string {
	b := []byte(s)
	if b[10] == 'A' {
		b[10] = 'B'
	} else {
		b[10] = 'A'
	}
	return string(b)
}

// A phone that knows the password but holds a nonce this server will not
// take any more gets Stale, and answers the stale challenge at once.
func TestStaleNonces(t *testing.T) {
	clk := newClock()
	s := newTestServer(t, clk, nil)
	ch := s.Challenge(SHA256, false)
	old := phone(t, ch, "alice", "alice-pw", 1)

	clk.Advance(5*time.Minute - time.Millisecond)
	wantResult(t, verify(t, s, phone(t, ch, "alice", "alice-pw", 2), alice), Accepted, nil)
	clk.Advance(2 * time.Millisecond)
	wantResult(t, verify(t, s, phone(t, ch, "alice", "alice-pw", 3), alice), Stale, ErrExpired)
	wantResult(t, verify(t, s, old, alice), Stale, ErrExpired)
	// Expired and wrong: a failure like any other.
	wantResult(t, verify(t, s, phone(t, ch, "alice", "guess", 4), alice), Rejected, ErrResponse)

	fresh := s.Challenges(true)[0]
	wantResult(t, verify(t, s, phone(t, fresh, "alice", "alice-pw", 1), alice), Accepted, nil)

	// A nonce this key did not sign, answered right: forged by a client
	// that knows the password, or issued before a restart with a new key.
	forged := strings.Replace(ch, extractNonce(t, ch), flip(extractNonce(t, ch)), 1)
	wantResult(t, verify(t, s, phone(t, forged, "alice", "alice-pw", 1), alice), Stale, ErrNonce)
	other := newTestServer(t, clk, func(c *Config) { c.Key = []byte("another key of 32 bytes, 0123456") })
	wantResult(t, verify(t, other, phone(t, s.Challenge(MD5, false), "alice", "alice-pw", 1), alice), Stale, ErrNonce)
	for _, bad := range []string{"short", strings.Repeat("A", 48), strings.Repeat("!", 48), strings.Repeat("A", 49)} {
		c := strings.Replace(ch, extractNonce(t, ch), bad, 1)
		wantResult(t, verify(t, s, phone(t, c, "alice", "alice-pw", 1), alice), Stale, ErrNonce)
	}
}

func extractNonce(t *testing.T, challenge string) string {
	t.Helper()
	ch, err := icholy.ParseChallenge(challenge)
	if err != nil {
		t.Fatal(err)
	}
	return ch.Nonce
}

// Nodes sharing the key take each other's nonces, within the clock skew.
func TestNoncesAcrossNodes(t *testing.T) {
	clkA, clkB := newClock(), newClock()
	a := newTestServer(t, clkA, nil)
	b := newTestServer(t, clkB, nil)
	wantResult(t, verify(t, b, phone(t, a.Challenge(SHA256, false), "alice", "alice-pw", 1), alice), Accepted, nil)

	clkA.Advance(4 * time.Second) // a's clock runs ahead, within the skew
	wantResult(t, verify(t, b, phone(t, a.Challenge(SHA256, false), "alice", "alice-pw", 1), alice), Accepted, nil)
	clkA.Advance(2 * time.Second) // now past it
	wantResult(t, verify(t, b, phone(t, a.Challenge(SHA256, false), "alice", "alice-pw", 1), alice), Stale, ErrExpired)
}

// Phones hash the Request-URI with or without its parameters; both name
// the same resource.
func TestURIMatching(t *testing.T) {
	for _, tc := range []struct {
		digest, request string
		same            bool
	}{
		{"sip:example.test", "sip:example.test", true},
		{"sip:example.test", "sip:example.test;transport=tcp", true},
		{"sip:example.test;transport=tcp", "sip:example.test", true},
		{"sip:EXAMPLE.test", "sip:example.test", true},
		{"sip:alice@example.test:5061", "sip:alice@example.test:5061;transport=tls", true},
		{"sip:+1555;phone-context=x@example.test", "sip:+1555;phone-context=x@example.test;user=phone", true},
		{"sip:example.test?x=y", "sip:example.test", true},
		{"sip:example.test", "sip:other.test", false},
		{"sip:example.test:5061", "sip:example.test", false},
		{"sips:example.test", "sip:example.test", false},
		{"sip:alice@example.test", "sip:bob@example.test", false},
		{"example.test", "sip:example.test", false},
		{"", "sip:example.test", false},
	} {
		if got := sameResource(tc.digest, tc.request); got != tc.same {
			t.Errorf("%q vs %q: %v", tc.digest, tc.request, got)
		}
	}
}

// The replay cache holds at most ReplayCache nonces; one pushed out can be
// replayed until it expires (documented), and expired ones go first.
func TestReplayCacheBounded(t *testing.T) {
	clk := newClock()
	s := newTestServer(t, clk, func(c *Config) { c.ReplayCache = 2 })
	var first []string
	for range 3 {
		h := phone(t, s.Challenge(SHA256, false), "alice", "alice-pw", 1)
		wantResult(t, verify(t, s, h, alice), Accepted, nil)
		first = append(first, h)
	}
	if n := len(s.replay.byKey); n != 2 {
		t.Fatalf("%d nonces kept", n)
	}
	wantResult(t, verify(t, s, first[2], alice), Stale, ErrReplay)
	wantResult(t, verify(t, s, first[0], alice), Accepted, nil) // forgotten: the documented gap

	clk.Advance(5*time.Minute + 6*time.Second)
	h := phone(t, s.Challenge(SHA256, false), "alice", "alice-pw", 1)
	wantResult(t, verify(t, s, h, alice), Accepted, nil)
	if n := len(s.replay.byKey); n != 1 {
		t.Errorf("%d nonces kept after the others expired", n)
	}
}
