package sip

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"pushd/component/dispatch"
)

const (
	testPRID     = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
	testInstance = `"<urn:uuid:6c4f0a2e-1111-4d5e-9a1b-0123456789ab>"`
)

func headerValues(res *sip.Response, name string) []string {
	var out []string
	for _, h := range res.GetHeaders(name) {
		out = append(out, h.Value())
	}
	return out
}

// registrar runs REGISTERs of alice's through their challenge and looks
// at what the registrar holds.
type registrar struct {
	t *testing.T
	w *world
	p *peer
}

func newRegistrar(t *testing.T, network string, edit func(*Config)) *registrar {
	w := startWorld(t, edit)
	addr := w.srv.Addr(network)
	return &registrar{t: t, w: w, p: dialPeer(t, network, addr)}
}

// register sends alice's REGISTER with these Contact header values
// (edit may change it further) and returns the final response.
func (r *registrar) register(edit func(message) message, contacts ...string) *sip.Response {
	r.t.Helper()
	req := r.p.register("alice", contacts[0])
	for _, c := range contacts[1:] {
		req = req.add("Contact", c)
	}
	if edit != nil {
		req = edit(req)
	}
	return r.p.registerAs(r.t, req, "alice", "alice-pw")
}

func (r *registrar) bindings() []Binding {
	return r.w.reg.Bindings("alice@"+testDomain, r.w.clock.Now())
}

func contactOf(addr, params string) string { return "<sip:alice@" + addr + params + ">" }

// C1: RFC 8599 parameters make a push binding (APNS VoIP, APNS alert,
// FCM), with the 200 listing every binding of the AOR and +sip.pnsreg's
// refresh interval (C8).
func TestRegisterPushBinding(t *testing.T) {
	r := newRegistrar(t, "udp", nil)
	voip := ";pn-provider=apns;pn-prid=" + testPRID + ";pn-param=ABCD1234.com.example.app.voip"
	res := r.register(nil, contactOf("127.0.0.1:5070", voip)+";+sip.instance="+testInstance+";+sip.pnsreg")
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d %s", res.StatusCode, res.Reason)
	}
	if caps := headerValues(res, "Feature-Caps"); !slices.Contains(caps, `*;+sip.pnsreg="120"`) {
		t.Errorf("Feature-Caps %q, want +sip.pnsreg=\"120\"", caps)
	}
	contacts := headerValues(res, "Contact")
	if len(contacts) != 1 || !strings.Contains(contacts[0], "expires=600") || !strings.Contains(contacts[0], "+sip.instance=") {
		t.Errorf("200 Contact %q", contacts)
	}
	bs := r.bindings()
	if len(bs) != 1 || bs[0].Push == nil || !bs[0].PNSReg || bs[0].Instance != strings.Trim(testInstance, `"`) {
		t.Fatalf("bindings %+v", bs)
	}
	p := *bs[0].Push
	if p.Provider != dispatch.APNS || p.PRID != testPRID || !p.VoIP() || p.Bundle() != "com.example.app" {
		t.Errorf("push %+v (voip %v, bundle %q)", p, p.VoIP(), p.Bundle())
	}

	// A second phone of hers: an alert-only APNS app and an FCM one.
	alert := ";pn-provider=apns;pn-prid=aa11;pn-param=ABCD1234.com.example.app"
	fcm := ";pn-provider=fcm;pn-prid=fcm-token:xyz;pn-param=example-project"
	res = r.register(nil, contactOf("127.0.0.1:5071", alert), contactOf("127.0.0.1:5072", fcm))
	if res.StatusCode != 200 || len(headerValues(res, "Contact")) != 3 {
		t.Fatalf("REGISTER of two more: %d, Contact %q", res.StatusCode, headerValues(res, "Contact"))
	}
	if slices.Contains(headerValues(res, "Feature-Caps"), `*;+sip.pnsreg="120"`) {
		t.Error("+sip.pnsreg answered to contacts that did not ask for it")
	}
	var got []string
	for _, b := range r.bindings() {
		got = append(got, string(b.Push.Provider)+" voip="+map[bool]string{true: "yes", false: "no"}[b.Push.VoIP()]+" "+b.Push.Bundle())
	}
	slices.Sort(got)
	want := []string{"apns voip=no com.example.app", "apns voip=yes com.example.app", "fcm voip=no "}
	if !slices.Equal(got, want) {
		t.Errorf("bindings %q, want %q", got, want)
	}
}

// C1, C8: 555 for a provider this node does not push through and for
// missing or malformed parameters, naming the providers it serves; a
// bare pn-provider is a capability query answered 200 with them.
func TestRegister555AndQuery(t *testing.T) {
	r := newRegistrar(t, "udp", nil)
	for _, pn := range []string{
		";pn-provider=webpush;pn-prid=abc;pn-param=x",
		";pn-provider=apns;pn-prid=abc",
		";pn-provider=apns;pn-param=ABCD1234.com.example.app",
		";pn-provider=apns;pn-prid=abc;pn-param=nodots",
		";pn-provider=apns;pn-prid=abc;pn-param=TEAM.single",
		";pn-provider=fcm;pn-prid=abc",
		";pn-provider=;pn-prid=abc;pn-param=p",
		";pn-provider=apns;pn-prid=" + strings.Repeat("a", maxPRID+1) + ";pn-param=ABCD1234.com.example.app",
	} {
		res := r.register(nil, contactOf("127.0.0.1:5070", pn))
		caps := headerValues(res, "Feature-Caps")
		if res.StatusCode != 555 || !slices.Equal(caps, []string{`*;+sip.pns="apns"`, `*;+sip.pns="fcm"`}) {
			t.Errorf("%.60s: %d, Feature-Caps %q; want 555 naming apns and fcm", pn, res.StatusCode, caps)
		}
	}
	if bs := r.bindings(); len(bs) != 0 {
		t.Fatalf("refused REGISTERs left bindings: %+v", bs)
	}
	res := r.register(nil, contactOf("127.0.0.1:5070", ";pn-provider"))
	caps := headerValues(res, "Feature-Caps")
	if res.StatusCode != 200 || !slices.Equal(caps, []string{`*;+sip.pns="apns"`, `*;+sip.pns="fcm"`}) {
		t.Errorf("query: %d, Feature-Caps %q", res.StatusCode, caps)
	}
	if bs := r.bindings(); len(bs) != 1 || bs[0].Push != nil {
		t.Errorf("a query registers a plain binding only: %+v", bs)
	}
}

// S2: pn-pushd-key is taken over TLS only, and never goes back on the
// wire in a Contact.
func TestRegisterKeyOnlyOverTLS(t *testing.T) {
	key := base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	pn := ";pn-provider=apns;pn-prid=" + testPRID + ";pn-param=ABCD1234.com.example.app.voip;pn-pushd-key="

	r := newRegistrar(t, "udp", nil)
	if res := r.register(nil, contactOf("127.0.0.1:5070", pn+key)); res.StatusCode != 403 {
		t.Errorf("key over UDP: %d, want 403", res.StatusCode)
	}

	r = newRegistrar(t, "tls", withTLS(t))
	if res := r.register(nil, contactOf("127.0.0.1:5070", pn+"not-a-key")); res.StatusCode != 400 {
		t.Errorf("malformed key over TLS: %d, want 400", res.StatusCode)
	}
	// Parameter names are case-insensitive (RFC 3261 §19.1.4): a key
	// spelt otherwise is still a key, and still never echoed.
	for _, name := range []string{"pn-pushd-key", "PN-Pushd-Key"} {
		res := r.register(nil, contactOf("127.0.0.1:5070", strings.Replace(pn, "pn-pushd-key", name, 1)+key+"=="))
		if res.StatusCode != 200 {
			t.Fatalf("%s over TLS: %d %s", name, res.StatusCode, res.Reason)
		}
		for _, c := range headerValues(res, "Contact") {
			if strings.Contains(strings.ToLower(c), "pn-pushd-key") {
				t.Errorf("the key is in the 200's Contact: %s", c)
			}
		}
		bs := r.bindings()
		if len(bs) != 1 || len(bs[0].Key) != 32 || bs[0].Transport != "tls" || strings.Contains(strings.ToLower(bs[0].Contact), "pn-pushd-key") {
			t.Fatalf("%s: bindings %+v", name, bs)
		}
	}
}

// RFC 3261 §10.3 with RFC 5626: one phone's new address replaces its
// binding (same +sip.instance), Expires 0 removes one, "Contact: *"
// removes all and only with Expires 0, too brief is 423 with
// Min-Expires, too long is cut to the maximum, and another user's AOR or
// domain is refused.
func TestRegisterBindingLifecycle(t *testing.T) {
	r := newRegistrar(t, "tcp", nil)
	inst := ";+sip.instance=" + testInstance
	if res := r.register(nil, contactOf("127.0.0.1:5070", "")+inst, contactOf("127.0.0.1:5071", "")); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	if res := r.register(nil, contactOf("127.0.0.1:5080", "")+inst); res.StatusCode != 200 || len(headerValues(res, "Contact")) != 2 {
		t.Fatalf("new address: %d %q", res.StatusCode, headerValues(res, "Contact"))
	}
	var contacts []string
	for _, b := range r.bindings() {
		contacts = append(contacts, b.Contact)
	}
	slices.Sort(contacts)
	if want := []string{"sip:alice@127.0.0.1:5071", "sip:alice@127.0.0.1:5080"}; !slices.Equal(contacts, want) {
		t.Fatalf("contacts %q, want %q", contacts, want)
	}

	if res := r.register(nil, contactOf("127.0.0.1:5071", "")+";expires=0"); res.StatusCode != 200 || len(r.bindings()) != 1 {
		t.Fatalf("expires=0: %d, %d bindings", res.StatusCode, len(r.bindings()))
	}
	if res := r.register(nil, "*"); res.StatusCode != 400 {
		t.Errorf("Contact * with Expires 600: %d, want 400", res.StatusCode)
	}
	if res := r.register(func(m message) message { return m.with("Expires", "0") }, "*"); res.StatusCode != 200 || len(r.bindings()) != 0 {
		t.Fatalf("Contact * with Expires 0: %d, %d bindings", res.StatusCode, len(r.bindings()))
	}

	res := r.register(func(m message) message { return m.with("Expires", "30") }, contactOf("127.0.0.1:5070", ""))
	if res.StatusCode != 423 || headerValues(res, "Min-Expires")[0] != "60" {
		t.Errorf("30 s: %d Min-Expires %q, want 423 and 60", res.StatusCode, headerValues(res, "Min-Expires"))
	}
	res = r.register(func(m message) message { return m.with("Expires", "7200") }, contactOf("127.0.0.1:5070", ""))
	if c := headerValues(res, "Contact"); res.StatusCode != 200 || len(c) != 1 || !strings.Contains(c[0], "expires=3600") {
		t.Errorf("7200 s: %d %q, want 200 and expires=3600", res.StatusCode, c)
	}
	if bs := r.bindings(); len(bs) != 1 || !bs[0].Expires.Equal(r.w.clock.Now().Add(time.Hour)) {
		t.Errorf("bindings %+v", bs)
	}
	// 9.3e9 s overflowed the Duration into a negative one (423); more
	// digits than an int holds were 400.
	for _, huge := range []string{"9300000000", "99999999999999999999"} {
		res = r.register(func(m message) message { return m.with("Expires", huge) }, contactOf("127.0.0.1:5070", ""))
		if c := headerValues(res, "Contact"); res.StatusCode != 200 || len(c) != 1 || !strings.Contains(c[0], "expires=3600") {
			t.Errorf("Expires %s: %d %q, want 200 and expires=3600", huge, res.StatusCode, c)
		}
	}
	for _, c := range []string{"<tel:+15551234567>", "<mailto:alice@example.com>"} {
		if res := r.register(nil, c); res.StatusCode != 400 {
			t.Errorf("Contact %s: %d, want 400", c, res.StatusCode)
		}
	}
	for _, bad := range []string{"abc", "-1", "+5", ""} {
		if res := r.register(func(m message) message { return m.with("Expires", bad) }, contactOf("127.0.0.1:5070", "")); res.StatusCode != 400 {
			t.Errorf("Expires %q: %d, want 400", bad, res.StatusCode)
		}
	}

	// Alice's credentials do not register Bob's phone.
	bob := "<sip:bob@" + testDomain + ">"
	if res := r.register(func(m message) message { return m.with("To", bob).with("From", bob+";tag=x") }, contactOf("127.0.0.1:5070", "")); res.StatusCode != 403 {
		t.Errorf("alice registering bob: %d, want 403", res.StatusCode)
	}
	req := r.p.register("alice", contactOf("127.0.0.1:5070", "")).with("To", "<sip:alice@elsewhere.example>")
	if code := r.p.expect(t, req); code != 404 {
		t.Errorf("another domain: %d, want 404", code)
	}
}

// S4, C1: an AOR holds at most maxBindings bindings, and a REGISTER over
// UDP gets its 200 whatever the AOR holds. RFC 8599 contacts are long (a
// token, a bundle id, an instance): a 200 listing a handful of them was
// larger than sipgo sends over UDP, so the phone never heard its answer,
// and a user could add bindings without end.
func TestRegisterManyBindings(t *testing.T) {
	r := newRegistrar(t, "udp", nil)
	contact := func(i int) string {
		return contactOf("127.0.0.1:"+strconv.Itoa(5100+i), ";pn-provider=fcm;pn-prid="+strings.Repeat("t", 160)+strconv.Itoa(i)+
			";pn-param=example-project") + `;+sip.instance="<urn:uuid:00000000-0000-4000-8000-0000000000` + fmt.Sprintf("%02d", i) + `>"`
	}
	for i := range maxBindings {
		res := r.register(nil, contact(i))
		if res.StatusCode != 200 {
			t.Fatalf("binding %d: %d %s", i, res.StatusCode, res.Reason)
		}
		if c := headerValues(res, "Contact"); len(c) == 0 || !strings.Contains(strings.Join(c, ","), "0000000000"+fmt.Sprintf("%02d", i)) {
			t.Fatalf("binding %d: the 200 does not list the binding it made: %q", i, c)
		}
	}
	if n := len(r.bindings()); n != maxBindings {
		t.Fatalf("%d bindings, want %d", n, maxBindings)
	}
	if res := r.register(nil, contact(maxBindings)); res.StatusCode != 403 {
		t.Errorf("binding %d: %d, want 403", maxBindings, res.StatusCode)
	}
	// A refresh of one held is no new binding.
	if res := r.register(nil, contact(3)); res.StatusCode != 200 {
		t.Errorf("refresh at the bound: %d", res.StatusCode)
	}
	if n := len(r.bindings()); n != maxBindings {
		t.Errorf("%d bindings, want %d", n, maxBindings)
	}
}
