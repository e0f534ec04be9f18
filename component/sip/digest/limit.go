package digest

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// LimiterConfig is what a Limiter needs. DefaultLimiterConfig documents
// each default.
type LimiterConfig struct {
	// MaxFailures within Window block the source or account (default 5).
	MaxFailures int
	// Window is how far back failures count (default 1 min).
	Window time.Duration
	// Block is the first block's length; each block that follows one
	// before it is Forget-ago doubles it (default 1 min).
	Block time.Duration
	// MaxBlock caps the doubling (default 1 h). A block of an account
	// also keeps its owner out: this bounds what an attacker who only
	// knows the name can do to them.
	MaxBlock time.Duration
	// Forget is how long an entry without a failure is kept, and so how
	// long the doubling remembers (default 1 h past the end of the last
	// block).
	Forget time.Duration
	// MaxSources and MaxAccounts bound the entries kept (default 16384
	// each, a few MB). Past them the least recently failing entry that is
	// not blocked goes; sources rotating user names cannot grow either.
	MaxSources  int
	MaxAccounts int
	// IPv6Prefix is the prefix length an IPv6 source is counted by
	// (default 64: one host can hold a whole /64).
	IPv6Prefix int
	// Now is the clock (default time.Now); tests pass a fake one.
	Now func() time.Time
}

// DefaultLimiterConfig returns the defaults.
func DefaultLimiterConfig() LimiterConfig {
	return LimiterConfig{
		MaxFailures: 5,
		Window:      time.Minute,
		Block:       time.Minute,
		MaxBlock:    time.Hour,
		Forget:      time.Hour,
		MaxSources:  16384,
		MaxAccounts: 16384,
		IPv6Prefix:  64,
		Now:         time.Now,
	}
}

// Limiter counts failed authentications per source address and per account
// and refuses, for a growing time, those that failed too often (BEHAVIOUR
// S4). The caller asks Allow before verifying, and reports Failed or
// Succeeded after. Only a Rejected verification is a failure; a Stale one
// is not. Safe for concurrent use; driven by its clock alone, no timers.
//
// A success clears the account's failures, not the source's: one valid
// account must not let a source go on guessing others.
type Limiter struct {
	cfg      LimiterConfig
	mu       sync.Mutex
	sources  *limitTable[netip.Prefix]
	accounts *limitTable[string]
}

// NewLimiter returns a Limiter for cfg; zero fields take their defaults.
func NewLimiter(cfg LimiterConfig) *Limiter {
	def := DefaultLimiterConfig()
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = def.MaxFailures
	}
	if cfg.Window <= 0 {
		cfg.Window = def.Window
	}
	if cfg.Block <= 0 {
		cfg.Block = def.Block
	}
	if cfg.MaxBlock <= 0 {
		cfg.MaxBlock = def.MaxBlock
	}
	cfg.MaxBlock = max(cfg.MaxBlock, cfg.Block)
	if cfg.Forget <= 0 {
		cfg.Forget = def.Forget
	}
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = def.MaxSources
	}
	if cfg.MaxAccounts <= 0 {
		cfg.MaxAccounts = def.MaxAccounts
	}
	if cfg.IPv6Prefix <= 0 || cfg.IPv6Prefix > 128 {
		cfg.IPv6Prefix = def.IPv6Prefix
	}
	if cfg.Now == nil {
		cfg.Now = def.Now
	}
	return &Limiter{
		cfg:      cfg,
		sources:  newLimitTable[netip.Prefix](cfg.MaxSources),
		accounts: newLimitTable[string](cfg.MaxAccounts),
	}
}

// sourceKey is what a source is counted by: the IPv4 address, or the
// IPv6 prefix.
func (l *Limiter) sourceKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := a.BitLen()
	if a.Is6() {
		bits = l.cfg.IPv6Prefix
	}
	// An invalid address (none known) is one bucket of its own.
	p, _ := a.Prefix(bits)
	return p
}

// Allow reports whether an attempt from source for account may be
// verified; when not, retryAfter is how long the longer of the two blocks
// still runs. It records nothing.
func (l *Limiter) Allow(source netip.Addr, account string) (ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	l.prune(now)
	until := l.sources.blockedUntil(l.sourceKey(source))
	if u := l.accounts.blockedUntil(account); u.After(until) {
		until = u
	}
	if now.Before(until) {
		return false, until.Sub(now)
	}
	return true, 0
}

// Failed records a failed attempt (Result Rejected) from source for
// account.
func (l *Limiter) Failed(source netip.Addr, account string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	l.prune(now)
	l.sources.fail(l.sourceKey(source), now, &l.cfg)
	l.accounts.fail(account, now, &l.cfg)
}

// Succeeded records an accepted attempt: the account's failures and its
// block history are forgotten.
func (l *Limiter) Succeeded(_ netip.Addr, account string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.accounts.forget(account)
}

// Len returns how many sources and accounts have entries, for a metric.
func (l *Limiter) Len() (sources, accounts int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.prune(l.cfg.Now())
	return len(l.sources.byKey), len(l.accounts.byKey)
}

func (l *Limiter) prune(now time.Time) {
	l.sources.prune(now, l.cfg.Forget)
	l.accounts.prune(now, l.cfg.Forget)
}

// limitTable holds the entries of one kind of key, least recently failed
// first.
type limitTable[K comparable] struct {
	max   int
	byKey map[K]*list.Element // of *limitEntry[K]
	order *list.List
}

type limitEntry[K comparable] struct {
	key K
	// fails are the times of the failures within the window, oldest
	// first; never more than MaxFailures.
	fails   []time.Time
	until   time.Time // blocked before this
	blocks  int       // blocks so far, for the doubling
	lastHit time.Time // the last failure
}

func newLimitTable[K comparable](max int) *limitTable[K] {
	return &limitTable[K]{max: max, byKey: map[K]*list.Element{}, order: list.New()}
}

func (t *limitTable[K]) blockedUntil(k K) time.Time {
	if e, ok := t.byKey[k]; ok {
		return e.Value.(*limitEntry[K]).until
	}
	return time.Time{}
}

func (t *limitTable[K]) fail(k K, now time.Time, cfg *LimiterConfig) {
	e, ok := t.byKey[k]
	if !ok {
		if len(t.byKey) >= t.max {
			t.evict(now)
		}
		e = t.order.PushBack(&limitEntry[K]{key: k})
		t.byKey[k] = e
	}
	t.order.MoveToBack(e)
	n := e.Value.(*limitEntry[K])
	n.lastHit = now
	if now.Before(n.until) {
		// Failing while blocked (the caller did not ask Allow, or raced
		// it) does not lengthen the block: its end stays predictable.
		return
	}
	keep := n.fails[:0]
	for _, f := range n.fails {
		if now.Sub(f) < cfg.Window {
			keep = append(keep, f)
		}
	}
	n.fails = append(keep, now)
	if len(n.fails) < cfg.MaxFailures {
		return
	}
	d := cfg.Block
	for i := 0; i < n.blocks && d < cfg.MaxBlock; i++ {
		d *= 2
	}
	n.until = now.Add(min(d, cfg.MaxBlock))
	n.blocks++
	n.fails = n.fails[:0]
}

// evict makes room: the least recently failing entry that is not
// blocked, among the first few; when they are all blocked, the oldest.
func (t *limitTable[K]) evict(now time.Time) {
	const scan = 16
	victim := t.order.Front()
	i := 0
	for e := victim; e != nil && i < scan; e, i = e.Next(), i+1 {
		if !now.Before(e.Value.(*limitEntry[K]).until) {
			victim = e
			break
		}
	}
	if victim != nil {
		t.remove(victim)
	}
}

// prune drops entries idle for forget past their block; the front is the
// least recently failing, so the scan stops at the first one still kept.
func (t *limitTable[K]) prune(now time.Time, forget time.Duration) {
	for e := t.order.Front(); e != nil; e = t.order.Front() {
		n := e.Value.(*limitEntry[K])
		if now.Sub(n.lastHit) < forget || now.Sub(n.until) < forget {
			return
		}
		t.remove(e)
	}
}

func (t *limitTable[K]) forget(k K) {
	if e, ok := t.byKey[k]; ok {
		t.remove(e)
	}
}

func (t *limitTable[K]) remove(e *list.Element) {
	delete(t.byKey, e.Value.(*limitEntry[K]).key)
	t.order.Remove(e)
}
