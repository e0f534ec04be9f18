package sip

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"pushd/component/sip/digest"
	"pushd/internal/store"
)

// Accounts are pushd's accounts as digest needs them: the HA1 of a user
// for an algorithm ("MD5", "SHA-256"), kept instead of the password (S5).
type Accounts interface {
	DigestHA1(username, algorithm string) ([]byte, error)
}

// authenticator challenges and verifies digest credentials (RFC 3261
// §22 with RFC 8760's SHA-256) and paces whoever keeps failing (S4).
type authenticator struct {
	accounts Accounts
	digest   *digest.Server
	limit    *digest.Limiter
	// noDigest remembers the accounts already logged as having no SIP
	// credentials (made before SIP support), so that each is logged once.
	mu       sync.Mutex
	noDigest map[string]bool
}

func newAuthenticator(cfg Config, accounts Accounts) (*authenticator, error) {
	key := cfg.DigestKey
	if len(key) == 0 {
		// A lone node: nonces need only survive as long as the process;
		// after a restart a phone gets stale=true and retries at once.
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	dcfg := digest.DefaultConfig()
	dcfg.Realm, dcfg.Key, dcfg.Now = cfg.Domain, key, cfg.Now
	for _, name := range cfg.DigestAlgorithms {
		alg, ok := digest.ParseAlgorithm(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("sip: digest algorithm %q: want SHA-256 or MD5", name)
		}
		dcfg.Algorithms = append(dcfg.Algorithms, alg)
	}
	d, err := digest.New(dcfg)
	if err != nil {
		return nil, fmt.Errorf("sip: digest: %w", err)
	}
	lcfg := digest.DefaultLimiterConfig()
	lcfg.Now = cfg.Now
	return &authenticator{accounts: accounts, digest: d, limit: digest.NewLimiter(lcfg), noDigest: map[string]bool{}}, nil
}

// check authenticates req. It returns the user when the credentials are
// right; otherwise it has answered the request (401/407 with challenges,
// 403, 400) and ok is false. proxy: INVITEs are challenged as a proxy
// (407, Proxy-Authorization), REGISTERs as a registrar (401).
func (a *authenticator) check(s *Server, req *sip.Request, tx sip.ServerTransaction, proxy bool) (user string, ok bool) {
	header, challenge, code, phrase := "Authorization", "WWW-Authenticate", 401, "Unauthorized"
	if proxy {
		header, challenge, code, phrase = "Proxy-Authorization", "Proxy-Authenticate", 407, "Proxy Authentication Required"
	}
	h := req.GetHeader(header)
	if h == nil {
		a.challenge(tx, req, challenge, code, phrase, false)
		return "", false
	}
	creds, err := digest.Parse(h.Value())
	if err != nil {
		s.count("auth_malformed")
		s.reply(tx, req, 400, "Bad "+header)
		return "", false
	}
	src := sourceAddr(req.Source())
	account := strings.ToLower(creds.Username)
	if ok, retry := a.limit.Allow(src, account); !ok {
		s.count("auth_paced")
		res := sip.NewResponseFromRequest(req, 403, "Forbidden", nil)
		res.AppendHeader(sip.NewHeader("Retry-After", strconv.Itoa(int(retry.Round(time.Second)/time.Second)+1)))
		_ = tx.Respond(res)
		return "", false
	}
	r := a.digest.Verify(digest.Request{Method: string(req.Method), URI: req.Recipient.String()}, creds,
		func(username string, alg digest.Algorithm) ([]byte, error) {
			return a.accounts.DigestHA1(username, alg.String())
		})
	switch r.Outcome {
	case digest.Accepted:
		a.limit.Succeeded(src, account)
		return creds.Username, true
	case digest.Stale:
		a.challenge(tx, req, challenge, code, phrase, true)
		return "", false
	}
	a.limit.Failed(src, account)
	s.count("auth_failed")
	if errors.Is(r.Err, store.ErrNoDigest) && a.firstNoDigest(account) {
		s.log.Warn("sip: account has no SIP credentials; set its password again to enable SIP", "account", s.red.Token(account))
	}
	s.log.Info("sip: authentication failed", "err", r.Err, "source", src.String())
	s.reply(tx, req, 403, "Forbidden")
	return "", false
}

func (a *authenticator) challenge(tx sip.ServerTransaction, req *sip.Request, name string, code int, phrase string, stale bool) {
	res := sip.NewResponseFromRequest(req, code, phrase, nil)
	for _, c := range a.digest.Challenges(stale) {
		res.AppendHeader(sip.NewHeader(name, c))
	}
	_ = tx.Respond(res)
}

func (a *authenticator) firstNoDigest(account string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.noDigest[account] || len(a.noDigest) > 1024 {
		return false
	}
	a.noDigest[account] = true
	return true
}

func sourceAddr(source string) netip.Addr {
	host, _, err := net.SplitHostPort(source)
	if err != nil {
		host = source
	}
	a, _ := parseAddr(host)
	return a
}
