package sip

import (
	"strconv"
	"testing"
	"time"
)

// S4: a source gets its burst, then the rate; other sources keep theirs.
func TestSourceLimiter(t *testing.T) {
	l := newSourceLimiter(2, 3)
	for i := range 3 {
		if !l.allow("192.0.2.1", t0) {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	if l.allow("192.0.2.1", t0) {
		t.Fatal("past the burst allowed")
	}
	if !l.allow("192.0.2.2", t0) {
		t.Fatal("another source refused")
	}
	if l.allow("192.0.2.1", t0.Add(400*time.Millisecond)) {
		t.Fatal("allowed before a token came back (2/s)")
	}
	if !l.allow("192.0.2.1", t0.Add(500*time.Millisecond)) {
		t.Fatal("refused once a token came back")
	}
	// A long pause refills to the burst, not beyond.
	n := 0
	for l.allow("192.0.2.1", t0.Add(time.Hour)) {
		n++
	}
	if n != 3 {
		t.Errorf("%d after an hour, want the burst of 3", n)
	}
}

// The limiter's memory is bounded (S4): a scan from many addresses
// evicts idle sources first, and never grows past maxSources.
func TestSourceLimiterBounded(t *testing.T) {
	l := newSourceLimiter(1, 2)
	busy := "198.51.100.1"
	l.allow(busy, t0)
	l.allow(busy, t0)
	for i := range maxSources + 10 {
		l.allow("10."+strconv.Itoa(i>>16&255)+"."+strconv.Itoa(i>>8&255)+"."+strconv.Itoa(i&255), t0.Add(time.Second))
	}
	if n := len(l.buckets); n > maxSources {
		t.Fatalf("%d buckets, bound %d", n, maxSources)
	}
}
