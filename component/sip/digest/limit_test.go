package digest

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func newTestLimiter(clk *clock, mod func(*LimiterConfig)) *Limiter {
	cfg := DefaultLimiterConfig()
	cfg.Now = clk.Now
	if mod != nil {
		mod(&cfg)
	}
	return NewLimiter(cfg)
}

var (
	srcA = netip.MustParseAddr("192.0.2.1")
	srcB = netip.MustParseAddr("192.0.2.2")
)

func wantAllow(t *testing.T, l *Limiter, src netip.Addr, account string, ok bool, wait time.Duration) {
	t.Helper()
	gotOK, gotWait := l.Allow(src, account)
	if gotOK != ok || gotWait != wait {
		t.Fatalf("Allow(%v, %q) = %v, %v; want %v, %v", src, account, gotOK, gotWait, ok, wait)
	}
}

// Five failures in a minute block for a minute, then two, four, … up to
// MaxBlock; the block is the same for the source and the account.
func TestLimiterBlocksAndGrows(t *testing.T) {
	clk := newClock()
	l := newTestLimiter(clk, func(c *LimiterConfig) { c.MaxBlock = 5 * time.Minute })
	for _, block := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute} {
		for range 4 {
			wantAllow(t, l, srcA, "alice", true, 0)
			l.Failed(srcA, "alice")
			clk.Advance(time.Second)
		}
		l.Failed(srcA, "alice")
		wantAllow(t, l, srcA, "alice", false, block)
		wantAllow(t, l, srcA, "bob", false, block)   // the source is blocked
		wantAllow(t, l, srcB, "alice", false, block) // and the account
		wantAllow(t, l, srcB, "bob", true, 0)
		// Failing while blocked does not lengthen it.
		l.Failed(srcA, "alice")
		clk.Advance(block - time.Second)
		wantAllow(t, l, srcA, "alice", false, time.Second)
		clk.Advance(time.Second)
		wantAllow(t, l, srcA, "alice", true, 0)
	}
}

// Failures slower than MaxFailures a Window never block.
func TestLimiterWindow(t *testing.T) {
	clk := newClock()
	l := newTestLimiter(clk, nil)
	for range 50 {
		l.Failed(srcA, "alice")
		clk.Advance(15 * time.Second) // 4 a minute
		wantAllow(t, l, srcA, "alice", true, 0)
	}
}

// Many sources guessing one account block the account, not each other;
// one source guessing many accounts blocks the source, not them.
func TestLimiterPerSourceAndAccount(t *testing.T) {
	clk := newClock()
	l := newTestLimiter(clk, nil)
	for i := range 5 {
		l.Failed(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), "alice")
	}
	wantAllow(t, l, srcA, "alice", false, time.Minute)
	wantAllow(t, l, netip.AddrFrom4([4]byte{198, 51, 100, 0}), "bob", true, 0)

	for i := range 5 {
		l.Failed(srcB, fmt.Sprintf("user%d", i))
	}
	wantAllow(t, l, srcB, "carol", false, time.Minute)
	wantAllow(t, l, srcA, "user0", true, 0)
}

// A success forgets the account's failures (its owner is back), not the
// source's: a valid account must not reset a source guessing others.
func TestLimiterSucceeded(t *testing.T) {
	clk := newClock()
	l := newTestLimiter(clk, nil)
	for range 4 {
		l.Failed(srcA, "alice")
	}
	l.Succeeded(srcA, "alice")
	l.Failed(srcB, "alice")
	wantAllow(t, l, srcB, "alice", true, 0) // alice's count started again
	l.Failed(srcA, "mallory")
	wantAllow(t, l, srcA, "zed", false, time.Minute) // srcA's fifth failure
}

// IPv6 sources count by /64; IPv4-mapped addresses as IPv4.
func TestLimiterIPv6Prefix(t *testing.T) {
	clk := newClock()
	l := newTestLimiter(clk, nil)
	for i := range 5 {
		l.Failed(netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i+1)), fmt.Sprintf("u%d", i))
	}
	wantAllow(t, l, netip.MustParseAddr("2001:db8:1:2:ffff::1"), "x", false, time.Minute)
	wantAllow(t, l, netip.MustParseAddr("2001:db8:1:3::1"), "x", true, 0)

	for i := range 5 {
		l.Failed(netip.MustParseAddr("::ffff:203.0.113.9"), fmt.Sprintf("v%d", i))
	}
	wantAllow(t, l, netip.MustParseAddr("203.0.113.9"), "x", false, time.Minute)
	wantAllow(t, l, netip.MustParseAddr("203.0.113.10"), "x", true, 0)

	// No address known: one bucket, which works like any other.
	for range 5 {
		l.Failed(netip.Addr{}, "w")
	}
	wantAllow(t, l, netip.Addr{}, "y", false, time.Minute)
}

// Entries are bounded: sources rotating user names, or user names rotating
// sources, never grow the tables past their maximum, and a blocked
// account outlives a flood of entries that are not.
func TestLimiterBounded(t *testing.T) {
	clk := newClock()
	l := newTestLimiter(clk, func(c *LimiterConfig) { c.MaxSources, c.MaxAccounts = 100, 100 })
	for i := range 5 {
		l.Failed(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), "alice")
	}
	wantAllow(t, l, srcA, "alice", false, time.Minute)
	for i := range 10000 {
		l.Failed(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), fmt.Sprintf("name%d", i))
		clk.Advance(time.Millisecond)
	}
	if s, a := l.Len(); s > 100 || a > 100 {
		t.Fatalf("%d sources, %d accounts kept", s, a)
	}
	ok, _ := l.Allow(srcA, "alice")
	if ok {
		t.Error("the flood unblocked alice")
	}
}

// An entry idle for Forget goes, and with it the doubling.
func TestLimiterForgets(t *testing.T) {
	clk := newClock()
	l := newTestLimiter(clk, func(c *LimiterConfig) { c.Forget = 10 * time.Minute })
	block := func() {
		for range 5 {
			l.Failed(srcA, "alice")
		}
	}
	block()
	clk.Advance(time.Minute)
	block()
	wantAllow(t, l, srcA, "alice", false, 2*time.Minute)
	clk.Advance(2*time.Minute + 10*time.Minute)
	if s, a := l.Len(); s != 0 || a != 0 {
		t.Fatalf("%d sources, %d accounts kept after Forget", s, a)
	}
	block()
	wantAllow(t, l, srcA, "alice", false, time.Minute)
}

func TestLimiterDefaults(t *testing.T) {
	l := NewLimiter(LimiterConfig{})
	d := DefaultLimiterConfig()
	if l.cfg.MaxFailures != 5 || l.cfg.Window != time.Minute || l.cfg.Block != d.Block || l.cfg.MaxBlock != d.MaxBlock ||
		l.cfg.Forget != d.Forget || l.cfg.MaxSources != d.MaxSources || l.cfg.MaxAccounts != d.MaxAccounts || l.cfg.IPv6Prefix != 64 || l.cfg.Now == nil {
		t.Errorf("defaults not applied: %+v", l.cfg)
	}
	if ok, _ := l.Allow(srcA, "alice"); !ok {
		t.Error("a fresh limiter refuses")
	}
}
