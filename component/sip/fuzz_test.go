package sip

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"pushd/component/dispatch"
)

// FuzzContactPush: whatever a phone writes in its Contact URI (C1, S4),
// contactPush never panics, refuses with one of its two errors, and what
// it accepts is bounded, printable and a push registration pushd can
// make: a provider it serves, a token, an APNS team and bundle or an FCM
// project.
func FuzzContactPush(f *testing.F) {
	for _, tc := range contactCases(f) {
		f.Add(tc.params)
	}
	f.Fuzz(func(t *testing.T, params string) {
		var u sip.Uri
		if err := sip.ParseUri("sip:alice@127.0.0.1:5070"+params, &u); err != nil {
			return
		}
		p, query, err := contactPush(func(name string) (string, bool) { return param(u.UriParams, name) }, testProviders)
		switch {
		case err != nil:
			if !errors.Is(err, ErrPushUnsupported) && !errors.Is(err, ErrPushParams) || p != nil || query {
				t.Fatalf("%v, %+v, query %v", err, p, query)
			}
			return
		case query:
			if p != nil {
				t.Fatalf("a query with push parameters %+v", p)
			}
			return
		case p == nil:
			if _, has := param(u.UriParams, "pn-provider"); has {
				t.Fatal("pn-provider given and neither push, query nor error")
			}
			return
		}
		if p.Provider != dispatch.APNS && p.Provider != dispatch.FCM {
			t.Fatalf("provider %q", p.Provider)
		}
		if p.PRID == "" || len(p.PRID) > maxPRID || len(p.Param) > maxPNParam || !printable(p.PRID) || !printable(p.Param) {
			t.Fatalf("unbounded or unprintable: %+v", p)
		}
		switch p.Provider {
		case dispatch.APNS:
			if b := p.Bundle(); b == "" || strings.HasSuffix(b, ".voip") || !strings.Contains(b, ".") {
				t.Fatalf("APNS bundle %q of %q", b, p.Param)
			}
			if p.VoIP() != strings.HasSuffix(p.Param, ".voip") {
				t.Fatalf("VoIP %v for %q", p.VoIP(), p.Param)
			}
		case dispatch.FCM:
			if p.Param == "" || p.VoIP() || p.Bundle() != "" {
				t.Fatalf("FCM %+v", p)
			}
		}
	})
}

// registerSeeds are REGISTERs as phones send them, and a few as they
// should not.
func registerSeeds() []string {
	base := "REGISTER sip:" + testDomain + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKseed;rport\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:alice@" + testDomain + ">;tag=1\r\n" +
		"To: <sip:alice@" + testDomain + ">\r\n" +
		"Call-ID: seed@test\r\n" +
		"CSeq: 2 REGISTER\r\n"
	end := "Content-Length: 0\r\n\r\n"
	voip := "<sip:alice@127.0.0.1:5070;pn-provider=apns;pn-prid=" + testPRID + ";pn-param=ABCD1234.com.example.app.voip>"
	return []string{
		base + "Contact: " + voip + ";+sip.instance=" + testInstance + ";+sip.pnsreg\r\nExpires: 600\r\n" + end,
		base + "Contact: <sip:alice@127.0.0.1:5070;pn-provider=fcm;pn-prid=tok;pn-param=proj>;expires=120, <sip:alice@127.0.0.1:5071>;expires=0\r\n" + end,
		base + "Contact: *\r\nExpires: 0\r\n" + end,
		base + "Contact: *\r\n" + end,
		base + "Contact: <sip:alice@127.0.0.1:5070;pn-provider>\r\n" + end,
		base + "Contact: <sip:alice@127.0.0.1:5070;pn-provider=webpush;pn-prid=x;pn-param=y>\r\n" + end,
		base + "Contact: <sip:alice@127.0.0.1:5070;PN-Pushd-Key=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA>\r\n" + end,
		base + "Contact: <sip:alice@127.0.0.1:5070>;expires=30\r\n" + end,
		base + "Contact: <sip:alice@127.0.0.1:5070>\r\nExpires: 99999999999999999999\r\n" + end,
		base + "Contact: \"A\" <sip:alice@127.0.0.1:5070?Subject=x>;+sip.instance=\"<urn:uuid:1>\";reg-id=1\r\n" + end,
		base + end,
	}
}

// FuzzRegister: a REGISTER as it comes off the wire (S4) goes through
// the checks every handler relies on and the registrar's reading of its
// Contacts without a panic; what parseContacts refuses it refuses with
// 400, 403, 423 or 555, and what it would store is within the bounds:
// an id, a SIP contact with a host that never carries the device key
// (as a parameter: the fuzzer wrote the name elsewhere), an expiry between
// Min and Max, a key only over TLS, at most 16 contacts.
func FuzzRegister(f *testing.F) {
	for _, s := range registerSeeds() {
		f.Add(s, false)
	}
	f.Add(registerSeeds()[6], true)
	cfg := DefaultConfig()
	cfg.Domain = testDomain
	cfg.Providers = testProviders
	cfg.Logger = discardLogger()
	s, err := New(cfg, Deps{Registrar: &Registrar{}, Accounts: testAccounts})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Close)
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, raw string, overTLS bool) {
		m, err := sip.ParseMessage([]byte(raw))
		if err != nil {
			return
		}
		req, ok := m.(*sip.Request)
		if !ok {
			return
		}
		req.SetTransport("UDP")
		if overTLS {
			req.SetTransport("TLS")
		}
		req.SetSource("127.0.0.1:5070")
		_ = messageSize(req)
		if malformed(req) != "" {
			return
		}
		u, _, res := s.parseContacts(req, "alice@"+testDomain, now)
		if res != nil {
			switch res.StatusCode {
			case 400, 403, 423, 555:
			default:
				t.Fatalf("refused with %d", res.StatusCode)
			}
			return
		}
		if len(u.Store)+len(u.Remove) > 16 {
			t.Fatalf("%d contacts taken", len(u.Store)+len(u.Remove))
		}
		for _, b := range u.Store {
			var cu sip.Uri
			if b.ID == "" || sip.ParseUri(b.Contact, &cu) != nil || cu.Scheme != "sip" && cu.Scheme != "sips" || cu.Host == "" {
				t.Fatalf("binding %+v", b)
			}
			if _, has := param(cu.UriParams, "pn-pushd-key"); has {
				t.Fatalf("the device key in the contact %q", b.Contact)
			}
			if b.Expires.Before(now.Add(cfg.MinExpires)) || b.Expires.After(now.Add(cfg.MaxExpires)) {
				t.Fatalf("expires in %v", b.Expires.Sub(now))
			}
			if len(b.Key) > 0 && (b.Transport != "tls" || len(b.Key) != 32) {
				t.Fatalf("a key of %d bytes over %s", len(b.Key), b.Transport)
			}
		}
		reg, _ := OpenRegistrar(nil)
		if _, err := reg.Apply("alice@"+testDomain, u, now); err != nil && !errors.Is(err, ErrOutOfOrder) && !errors.Is(err, ErrTooManyBindings) {
			t.Fatal(err)
		}
		if n := len(reg.Bindings("alice@"+testDomain, now)); n > maxBindings {
			t.Fatalf("%d bindings", n)
		}
	})
}
