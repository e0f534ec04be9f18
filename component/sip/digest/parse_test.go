package digest

import (
	"errors"
	"strings"
	"testing"
)

const minimal = `username="alice", realm="example.test", nonce="n", uri="sip:example.test", response="0a"`

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Credentials
	}{
		// The example leaves out the uri, which RFC 2617 requires.
		{"RFC 3261 §20.7 example with a uri", `Digest username="Alice", realm="atlanta.com", nonce="84a4cc6f3082121f32b42a2187831a9e", uri="sip:atlanta.com", response="7587245234b3434cc3412213e5f113a5432"`,
			Credentials{Username: "Alice", Realm: "atlanta.com", Nonce: "84a4cc6f3082121f32b42a2187831a9e", URI: "sip:atlanta.com", Response: "7587245234b3434cc3412213e5f113a5432"}},
		{"all parameters", `Digest username="bob", realm="example.test", nonce="abc", uri="sip:example.test;transport=tcp", response="0123abcd", algorithm=SHA-256, qop=auth, nc=0000000a, cnonce="c n", opaque="o", userhash=false`,
			Credentials{Username: "bob", Realm: "example.test", Nonce: "abc", URI: "sip:example.test;transport=tcp", Response: "0123abcd", Algorithm: "SHA-256", Qop: "auth", NC: "0000000a", Cnonce: "c n", Opaque: "o"}},
		{"escapes", `Digest username="a\"b\\c\d", realm="r", nonce="n", uri="u", response="0a"`,
			Credentials{Username: `a"b\cd`, Realm: "r", Nonce: "n", URI: "u", Response: "0a"}},
		{"names and scheme in any case", `dIgEsT USERNAME="u", Realm="r", NONCE="n", Uri="u", Response="0A", ALGORITHM=md5, QOP=AUTH, NC=0000000F, CNONCE="c", UserHash=TRUE`,
			Credentials{Username: "u", Realm: "r", Nonce: "n", URI: "u", Response: "0A", Algorithm: "md5", Qop: "AUTH", NC: "0000000F", Cnonce: "c", Userhash: true}},
		{"tokens and quotes either way", `Digest username=alice, realm=example.test, nonce=n, uri="sip:x", response=0a, algorithm="MD5", qop="auth", nc="00000001", cnonce=c`,
			Credentials{Username: "alice", Realm: "example.test", Nonce: "n", URI: "sip:x", Response: "0a", Algorithm: "MD5", Qop: "auth", NC: "00000001", Cnonce: "c"}},
		{"white space, folding, empty elements", "  Digest \t username = \"u\" ,\r\n  realm=\"r\",, nonce=\"n\"\r\n\t, uri=\"u\", response=\"0a\",  ",
			Credentials{Username: "u", Realm: "r", Nonce: "n", URI: "u", Response: "0a"}},
		{"folding inside quotes", "Digest username=\"a\r\n b\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0a\"",
			Credentials{Username: "a b", Realm: "r", Nonce: "n", URI: "u", Response: "0a"}},
		{"UTF-8 name", `Digest username="jürgen", realm="r", nonce="n", uri="u", response="0a"`,
			Credentials{Username: "jürgen", Realm: "r", Nonce: "n", URI: "u", Response: "0a"}},
		{"unknown parameters skipped", `Digest ` + minimal + `, x-ext="v, w", token=t`,
			Credentials{Username: "alice", Realm: "example.test", Nonce: "n", URI: "sip:example.test", Response: "0a"}},
		{"empty realm kept (Verify refuses it)", `Digest username="u", realm="", nonce="n", uri="u", response="0a"`,
			Credentials{Username: "u", Nonce: "n", URI: "u", Response: "0a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// The bounds are limits, not off by one: exactly maxParams parameters, a
// value of maxValueLen bytes and a header of MaxHeaderLen bytes parse.
func TestParseBounds(t *testing.T) {
	if _, err := Parse(`Digest ` + minimal + manyParams(maxParams-5)); err != nil {
		t.Errorf("%d parameters: %v", maxParams, err)
	}
	h := `Digest ` + minimal
	for i := 0; len(h) < MaxHeaderLen; i++ {
		// Each extension parameter: `, xN="…"` with a value of up to
		// maxValueLen bytes, the last one filling the header exactly.
		prefix := `, x` + string(rune('a'+i)) + `="`
		n := min(maxValueLen, MaxHeaderLen-len(h)-len(prefix)-1)
		h += prefix + strings.Repeat("v", n) + `"`
	}
	if len(h) != MaxHeaderLen {
		t.Fatalf("built %d bytes", len(h))
	}
	if _, err := Parse(h); err != nil {
		t.Errorf("%d bytes: %v", len(h), err)
	}
	if _, err := Parse(h + " "); !errors.Is(err, ErrMalformed) {
		t.Errorf("%d bytes: %v", len(h)+1, err)
	}
}

func TestParseRefuses(t *testing.T) {
	long := strings.Repeat("a", 300)
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"scheme only", "Digest"},
		{"scheme and space", "Digest "},
		{"Basic", "Basic YWxpY2U6cGFzcw=="},
		{"no space after scheme", `Digest,` + minimal},
		{"other scheme", `Digestive ` + minimal},
		{"duplicate known", `Digest ` + minimal + `, nonce="m"`},
		{"duplicate in other case", `Digest ` + minimal + `, NONCE="n"`},
		{"duplicate unknown", `Digest ` + minimal + `, x=1, X=2`},
		{"no username", `Digest realm="r", nonce="n", uri="u", response="0a"`},
		{"no realm", `Digest username="u", nonce="n", uri="u", response="0a"`},
		{"no nonce", `Digest username="u", realm="r", uri="u", response="0a"`},
		{"no uri", `Digest username="u", realm="r", nonce="n", response="0a"`},
		{"no response", `Digest username="u", realm="r", nonce="n", uri="u"`},
		{"empty username", `Digest username="", realm="r", nonce="n", uri="u", response="0a"`},
		{"empty response", `Digest username="u", realm="r", nonce="n", uri="u", response=""`},
		{"response not hex", `Digest username="u", realm="r", nonce="n", uri="u", response="xyz"`},
		{"username*", `Digest ` + minimal + `, username*=UTF-8''a`},
		{"qop without nc", `Digest ` + minimal + `, qop=auth, cnonce="c"`},
		{"qop without cnonce", `Digest ` + minimal + `, qop=auth, nc=00000001`},
		{"empty cnonce", `Digest ` + minimal + `, qop=auth, nc=00000001, cnonce=""`},
		{"nc without qop", `Digest ` + minimal + `, nc=00000001`},
		{"cnonce without qop", `Digest ` + minimal + `, cnonce="c"`},
		{"nc short", `Digest ` + minimal + `, qop=auth, nc=0000001, cnonce="c"`},
		{"nc long", `Digest ` + minimal + `, qop=auth, nc=000000001, cnonce="c"`},
		{"nc zero", `Digest ` + minimal + `, qop=auth, nc=00000000, cnonce="c"`},
		{"nc not hex", `Digest ` + minimal + `, qop=auth, nc=0000000g, cnonce="c"`},
		{"userhash other", `Digest ` + minimal + `, userhash=yes`},
		{"unclosed quote", `Digest username="u, realm="r"`},
		{"escape at end", `Digest username="u\`},
		{"no value", `Digest username=, realm="r"`},
		{"no equals", `Digest username "u"`},
		{"name only", `Digest ` + minimal + `, stale`},
		{"junk after value", `Digest username="u" x, realm="r", nonce="n", uri="u", response="0a"`},
		{"unquoted uri", `Digest username="u", realm="r", nonce="n", uri=sip:example.test, response="0a"`},
		{"bare name character", `Digest ` + minimal + `, (x)=1`},
		{"two credentials", `Digest ` + minimal + `, Digest ` + minimal},
		{"NUL", "Digest username=\"a\x00b\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0a\""},
		{"escaped NUL", "Digest username=\"a\\\x00b\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0a\""},
		{"control character", "Digest username=\"a\x01b\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0a\""},
		{"DEL", "Digest username=\"a\x7fb\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0a\""},
		{"bare LF", "Digest username=\"u\",\nrealm=\"r\", nonce=\"n\", uri=\"u\", response=\"0a\""},
		{"bare CR in quotes", "Digest username=\"a\rb\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0a\""},
		{"CRLF not folded", "Digest username=\"u\",\r\nrealm=\"r\", nonce=\"n\", uri=\"u\", response=\"0a\""},
		{"invalid UTF-8", "Digest username=\"\xff\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0a\""},
		{"long username", `Digest username="` + long + `", realm="r", nonce="n", uri="u", response="0a"`},
		{"long token username", `Digest username=` + long + `, realm="r", nonce="n", uri="u", response="0a"`},
		{"long unknown", `Digest ` + minimal + `, x="` + strings.Repeat("a", 1025) + `"`},
		{"long header", `Digest ` + minimal + `, x="` + strings.Repeat("a", MaxHeaderLen) + `"`},
		{"too many parameters", `Digest ` + minimal + manyParams(maxParams-4)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.in)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %+v, %v", c, err)
			}
		})
	}
}

func manyParams(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(", x")
		b.WriteByte(byte('a' + i%26))
		b.WriteByte(byte('a' + i/26))
		b.WriteString("=1")
	}
	return b.String()
}

// Errors say what was wrong and where, never what the header held: they
// reach log lines (S3).
func TestParseErrorsCarryNoValues(t *testing.T) {
	for _, in := range []string{
		`Digest username="secret-name", realm="r", nonce="n", uri="u"`,
		`Digest username="secret-name", realm="r", nonce="n", uri="u", response="0a", secret-name=1, secret-name=2`,
		`Digest username="secret-name" secret-name`,
		`Digest username="secret-name` + strings.Repeat("x", 300) + `"`,
		`Digest secret-name`,
		`secret-name username="u"`,
	} {
		_, err := Parse(in)
		if err == nil {
			t.Fatalf("%q parsed", in)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: error %q repeats the header", in, err)
		}
	}
}
