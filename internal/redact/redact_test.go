package redact

import (
	"fmt"
	"strings"
	"testing"
)

func TestTokenHidesAndIsStable(t *testing.T) {
	r := NewWithKey([]byte("k"))
	a := r.Token("alice@example.org/phone")
	if strings.Contains(a, "alice") || strings.Contains(a, "example") {
		t.Fatalf("token %q leaks the value", a)
	}
	if r.Token("Alice@Example.org/phone") != a {
		t.Error("case changes the token")
	}
	if r.Token("bob@example.org") == a {
		t.Error("two values share a token")
	}
	if NewWithKey([]byte("other")).Token("alice@example.org/phone") == a {
		t.Error("token does not depend on the key")
	}
	if New().Token("") != "" {
		t.Error("empty value gives a token")
	}
}

// The cache of recent tokens changes no token: one computed again after
// the cache started afresh, or for another case of the same value, is
// the same.
func TestTokenCacheKeepsTokens(t *testing.T) {
	r := NewWithKey([]byte("k"))
	first := r.Token("alice@example.test")
	for i := range cacheLimit + 1 {
		r.Token(fmt.Sprintf("user%d@example.test", i))
	}
	if again := r.Token("alice@example.test"); again != first {
		t.Fatalf("token after the cache was renewed %q, before %q", again, first)
	}
	if folded := r.Token("Alice@Example.test"); folded != first {
		t.Fatalf("token of another case %q, want %q", folded, first)
	}
}
