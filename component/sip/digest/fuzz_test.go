package digest

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// quote writes s as a quoted string, escaping what must be.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// format writes c back as a header value, every parameter quoted.
func format(c Credentials) string {
	parts := []string{
		"username=" + quote(c.Username), "realm=" + quote(c.Realm), "nonce=" + quote(c.Nonce),
		"uri=" + quote(c.URI), "response=" + quote(c.Response),
	}
	for _, p := range []struct{ name, v string }{{"algorithm", c.Algorithm}, {"qop", c.Qop}, {"nc", c.NC}, {"cnonce", c.Cnonce}, {"opaque", c.Opaque}} {
		if p.v != "" {
			parts = append(parts, p.name+"="+quote(p.v))
		}
	}
	if c.Userhash {
		parts = append(parts, "userhash=true")
	}
	return "Digest " + strings.Join(parts, ", ")
}

// FuzzParse: Parse never panics, refuses with ErrMalformed only, and what
// it accepts is bounded, well formed, reads back the same when written out
// again, and never verifies (no nonce here was signed).
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`Digest ` + minimal,
		`Digest username="bob", realm="example.test", nonce="abc", uri="sip:example.test;transport=tcp", response="0123abcd", algorithm=SHA-256, qop=auth, nc=0000000a, cnonce="c n", opaque="o", userhash=false`,
		`Digest username="a\"b\\c\d", realm="r", nonce="n", uri="u", response="0a"`,
		"  Digest \t username = \"u\" ,\r\n  realm=\"r\",, nonce=\"n\"\r\n\t, uri=\"u\", response=\"0a\",  ",
		`Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="8ca523f5e9506fed4657c9700eebdbec", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"`,
		`Digest username="u", realm="r", nonce="n", uri="u", response="0a", username*=UTF-8''a`,
		`Digest username="u\`,
		"Digest username=\"a\r\n b\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0a\"",
		`Basic YWxpY2U6cGFzcw==`,
	} {
		f.Add(seed)
	}
	s, err := New(Config{Realm: testRealm, Key: testKey})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(in) > MaxHeaderLen {
			t.Fatalf("%d bytes parsed", len(in))
		}
		for name, v := range map[string]string{"username": c.Username, "realm": c.Realm, "nonce": c.Nonce, "uri": c.URI, "response": c.Response,
			"algorithm": c.Algorithm, "qop": c.Qop, "nc": c.NC, "cnonce": c.Cnonce, "opaque": c.Opaque} {
			limit := maxValueLen
			if l, ok := valueLimits[name]; ok {
				limit = l
			}
			if len(v) > limit || !utf8.ValidString(v) || strings.ContainsAny(v, "\x00\r\n\x7f") {
				t.Fatalf("%s: %q", name, v)
			}
		}
		if c.Username == "" || c.Nonce == "" || c.URI == "" || c.Response == "" || !isHex(c.Response) {
			t.Fatalf("accepted without what is required: %+v", c)
		}
		if (c.Qop == "") != (c.NC == "" && c.Cnonce == "") {
			t.Fatalf("qop, nc and cnonce not together: %+v", c)
		}
		again, err := Parse(format(c))
		if err != nil || again != c {
			t.Fatalf("written out as %q: %+v, %v; was %+v", format(c), again, err, c)
		}
		if res := s.Verify(Request{Method: "REGISTER", URI: c.URI}, c, alice); res.Outcome == Accepted {
			t.Fatalf("verified: %+v", c)
		}
	})
}
