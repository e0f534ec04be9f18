package sip

import (
	"bufio"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"pushd/component/dispatch"
	"pushd/component/payload"
)

var testProviders = []dispatch.ProviderName{dispatch.APNS, dispatch.FCM}

type contactCase struct{ params, want string }

// contactCases reads testdata/contacts.txt.
func contactCases(t testing.TB) []contactCase {
	f, err := os.Open("testdata/contacts.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []contactCase
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		params, want, ok := strings.Cut(line, "\t")
		if !ok {
			t.Fatalf("contacts.txt: no tab in %q", line)
		}
		out = append(out, contactCase{params, strings.TrimSpace(want)})
	}
	return out
}

// describe says what contactPush made of a contact, in contacts.txt's
// words.
func describe(p *PushParams, query bool, err error) string {
	switch {
	case errors.Is(err, ErrPushUnsupported):
		return "unsupported"
	case errors.Is(err, ErrPushParams):
		return "malformed"
	case err != nil:
		return "error " + err.Error()
	case query:
		return "query"
	case p == nil:
		return "none"
	}
	channel, what := "alert", p.Bundle()
	if p.VoIP() {
		channel = "voip"
	}
	if p.Provider == dispatch.FCM {
		what = p.Param
	}
	return string(p.Provider) + " " + channel + " " + what
}

// C1: RFC 8599's parameters as sipgo parses them out of a Contact URI.
func TestContactPush(t *testing.T) {
	for _, tc := range contactCases(t) {
		var u sip.Uri
		if err := sip.ParseUri("sip:alice@127.0.0.1:5070"+tc.params, &u); err != nil {
			t.Errorf("%s: %v", tc.params, err)
			continue
		}
		get := func(name string) (string, bool) { return param(u.UriParams, name) }
		if got := describe(contactPush(get, testProviders)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.params, got, tc.want)
		}
	}
	// Bounds (S4): what a phone may make pushd store.
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		prid, param, want string
	}{
		{long(maxPRID), "ABCD1234.com.example.app", "apns alert com.example.app"},
		{long(maxPRID + 1), "ABCD1234.com.example.app", "malformed"},
		{"abc", "ABCD1234.com.example." + long(maxPNParam-len("ABCD1234.com.example.")), "apns alert com.example." + long(maxPNParam-len("ABCD1234.com.example."))},
		{"abc", "ABCD1234.com.example." + long(maxPNParam), "malformed"},
		{"ab\x7f", "ABCD1234.com.example.app", "malformed"},
		{"abc", "ABCD1234.com.exa mple.app", "malformed"},
	} {
		get := func(k string) (string, bool) {
			return map[string]string{"pn-provider": "apns", "pn-prid": tc.prid, "pn-param": tc.param}[k], true
		}
		if got := describe(contactPush(get, testProviders)); got != tc.want {
			t.Errorf("prid of %d, param of %d: %.40s, want %.40s", len(tc.prid), len(tc.param), got, tc.want)
		}
	}
	// A node without FCM refuses it.
	get := func(k string) (string, bool) {
		v, ok := map[string]string{"pn-provider": "fcm", "pn-prid": "t", "pn-param": "p"}[k]
		return v, ok
	}
	if got := describe(contactPush(get, []dispatch.ProviderName{dispatch.APNS})); got != "unsupported" {
		t.Errorf("fcm at an APNS-only node: %s", got)
	}
}

// S2: pn-pushd-key is 32 bytes in base64url, padded or not.
func TestContactKey(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{strings.Repeat("A", 43), true},
		{strings.Repeat("A", 43) + "=", true},
		{strings.Repeat("_", 43), true},
		{strings.Repeat("A", 42), false},
		{strings.Repeat("A", 44), false},
		{strings.Repeat("+", 43), false},
		{"", false},
	} {
		k, err := contactKey(tc.in)
		if (err == nil) != tc.ok || tc.ok && len(k) != payload.KeySize {
			t.Errorf("%q: %d bytes, %v", tc.in, len(k), err)
		}
	}
}

// C2, C7: a VoIP binding gives the dispatcher its PushKit token, the XMPP
// registration of the same phone its message token and key; an alert
// binding its token alone.
func TestBindingRegistration(t *testing.T) {
	b := Binding{AOR: "alice@" + testDomain, ID: "i", Push: &PushParams{Provider: dispatch.APNS, PRID: "voip-tok", Param: "T.com.example.app.voip"}}
	var key [payload.KeySize]byte
	key[0] = 1
	xmpp := dispatch.Registration{Provider: dispatch.APNS, Token: "msg-tok", VoIPToken: "stale", Key: &key, Region: "CN"}
	r := b.Registration(xmpp, true)
	if r.VoIPToken != "voip-tok" || r.Token != "msg-tok" || r.Key != &key || r.Region != "CN" || r.Topic != "com.example.app" ||
		r.Owner != RegistrationOwner || r.ID != b.AOR+"\x00i" {
		t.Errorf("VoIP binding with its XMPP registration: %+v", r)
	}
	r = b.Registration(dispatch.Registration{}, false)
	if r.VoIPToken != "voip-tok" || r.Token != "" || r.Key != nil {
		t.Errorf("VoIP binding alone: %+v", r)
	}
	b.Push.Param = "T.com.example.app"
	b.Key = key[:]
	r = b.Registration(dispatch.Registration{}, false)
	if r.VoIPToken != "" || r.Token != "voip-tok" || r.Key == nil || *r.Key != key {
		t.Errorf("alert binding with its own key: %+v", r)
	}
	if got := b.Device(); got != "apns/voip-tok" {
		t.Errorf("Device %q", got)
	}
}
