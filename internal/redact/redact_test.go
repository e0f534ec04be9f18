package redact

import (
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
