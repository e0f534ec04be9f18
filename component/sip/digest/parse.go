package digest

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Credentials is a parsed Authorization or Proxy-Authorization value:
// every parameter Verify uses, unescaped, as the phone sent it (the
// response is computed over these exact strings).
type Credentials struct {
	Username string
	Realm    string
	Nonce    string
	URI      string
	// Response is the hex digest the phone computed.
	Response string
	// Algorithm is empty when the phone sent none (MD5, RFC 7616 §3.3).
	Algorithm string
	// Qop is empty when the phone sent none (RFC 2069 style, refused by
	// Verify); NC and Cnonce are then empty too.
	Qop    string
	NC     string
	Cnonce string
	Opaque string
	// Userhash is the phone's userhash flag; Verify refuses it (not
	// offered).
	Userhash bool
}

// ErrMalformed is what Parse returns, wrapped with what was wrong (never
// with a value from the header).
var ErrMalformed = errors.New("digest: malformed credentials")

// Bounds on what Parse reads. A real Authorization value is a few hundred
// bytes; these leave room for long URIs and foreign nonces and refuse
// anything meant to cost memory or time.
const (
	// MaxHeaderLen is the longest header value Parse reads.
	MaxHeaderLen = 4096
	// maxParams bounds the parameters, known or not.
	maxParams = 32
	// maxValueLen bounds a parameter's value when no tighter bound is
	// known for it.
	maxValueLen = 1024
)

// valueLimits are tighter bounds for the parameters Verify reads.
var valueLimits = map[string]int{
	"username":  256,
	"realm":     256,
	"nonce":     256,
	"cnonce":    256,
	"opaque":    256,
	"response":  128, // SHA-512's hex would be 128
	"algorithm": 32,
	"qop":       32,
	"nc":        8,
	"userhash":  5,
}

// Parse reads an Authorization or Proxy-Authorization header field value
// ("Digest username=…, …"). Parameter names are case-insensitive; values
// are tokens or quoted strings with backslash escapes, unfolded. A value
// longer than MaxHeaderLen, a parameter given twice, a required one
// missing (username, realm, nonce, uri, response; nc and cnonce when qop
// is given), a control character, invalid UTF-8 or anything off the
// grammar of RFC 3261 §25 (digest-response) is ErrMalformed. Unknown
// parameters are skipped (auth-param), within the bounds.
func Parse(value string) (Credentials, error) {
	if len(value) > MaxHeaderLen {
		return Credentials{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxHeaderLen)
	}
	if !utf8.ValidString(value) {
		return Credentials{}, fmt.Errorf("%w: not UTF-8", ErrMalformed)
	}
	p := parser{s: value}
	p.skipSpace()
	scheme := p.token()
	if !strings.EqualFold(scheme, "Digest") {
		return Credentials{}, fmt.Errorf("%w: scheme is not Digest", ErrMalformed)
	}
	if !p.skipSpace() {
		return Credentials{}, fmt.Errorf("%w: no space after the scheme", ErrMalformed)
	}
	params := map[string]string{}
	n := 0
	for {
		p.skipSpace()
		if p.done() {
			break
		}
		if p.peek() == ',' { // an empty list element (RFC 7230 §7)
			p.i++
			continue
		}
		if n++; n > maxParams {
			return Credentials{}, fmt.Errorf("%w: more than %d parameters", ErrMalformed, maxParams)
		}
		name := strings.ToLower(p.token())
		if name == "" {
			return Credentials{}, fmt.Errorf("%w: parameter name expected at byte %d", ErrMalformed, p.i)
		}
		p.skipSpace()
		if p.done() || p.peek() != '=' {
			return Credentials{}, fmt.Errorf("%w: '=' expected at byte %d", ErrMalformed, p.i)
		}
		p.i++
		p.skipSpace()
		limit := maxValueLen
		if l, ok := valueLimits[name]; ok {
			limit = l
		}
		val, err := p.value(limit)
		if err != nil {
			return Credentials{}, err
		}
		if _, dup := params[name]; dup {
			if _, known := valueLimits[name]; known || name == "uri" {
				return Credentials{}, fmt.Errorf("%w: parameter %s given twice", ErrMalformed, name)
			}
			return Credentials{}, fmt.Errorf("%w: a parameter is given twice", ErrMalformed)
		}
		params[name] = val
		p.skipSpace()
		if p.done() {
			break
		}
		if p.peek() != ',' {
			return Credentials{}, fmt.Errorf("%w: ',' expected at byte %d", ErrMalformed, p.i)
		}
		p.i++
	}
	return credentialsOf(params)
}

func credentialsOf(params map[string]string) (Credentials, error) {
	for _, name := range []string{"username", "realm", "nonce", "uri", "response"} {
		if _, ok := params[name]; !ok {
			return Credentials{}, fmt.Errorf("%w: no %s", ErrMalformed, name)
		}
	}
	if _, ok := params["username*"]; ok {
		// RFC 7616 §3.4.4: only with charset/userhash, neither offered.
		return Credentials{}, fmt.Errorf("%w: username* is not supported", ErrMalformed)
	}
	c := Credentials{
		Username:  params["username"],
		Realm:     params["realm"],
		Nonce:     params["nonce"],
		URI:       params["uri"],
		Response:  params["response"],
		Algorithm: params["algorithm"],
		Qop:       params["qop"],
		NC:        params["nc"],
		Cnonce:    params["cnonce"],
		Opaque:    params["opaque"],
	}
	if c.Username == "" || c.Nonce == "" || c.URI == "" {
		return Credentials{}, fmt.Errorf("%w: empty username, nonce or uri", ErrMalformed)
	}
	if !isHex(c.Response) || c.Response == "" {
		return Credentials{}, fmt.Errorf("%w: response is not hex", ErrMalformed)
	}
	_, hasNC := params["nc"]
	_, hasCnonce := params["cnonce"]
	if _, hasQop := params["qop"]; hasQop {
		if c.Qop == "" {
			return Credentials{}, fmt.Errorf("%w: empty qop", ErrMalformed)
		}
		if !hasNC || !hasCnonce {
			return Credentials{}, fmt.Errorf("%w: qop without nc or cnonce", ErrMalformed)
		}
		if _, ok := parseNC(c.NC); !ok {
			return Credentials{}, fmt.Errorf("%w: nc is not 8 hex digits from 00000001", ErrMalformed)
		}
		if c.Cnonce == "" {
			return Credentials{}, fmt.Errorf("%w: empty cnonce", ErrMalformed)
		}
	} else if hasNC || hasCnonce {
		return Credentials{}, fmt.Errorf("%w: nc or cnonce without qop", ErrMalformed)
	}
	if u, ok := params["userhash"]; ok {
		switch {
		case strings.EqualFold(u, "true"):
			c.Userhash = true
		case strings.EqualFold(u, "false"):
		default:
			return Credentials{}, fmt.Errorf("%w: userhash is neither true nor false", ErrMalformed)
		}
	}
	return c, nil
}

// parseNC reads an nc-value: exactly 8 hex digits (RFC 7616 §3.4: 8LHEX;
// upper case is taken too, since the phone hashed what it sent), counting
// from 1.
func parseNC(s string) (uint32, bool) {
	if len(s) != 8 || !isHex(s) {
		return 0, false
	}
	var n uint32
	for i := 0; i < len(s); i++ {
		n = n<<4 | uint32(unhex(s[i]))
	}
	return n, n != 0
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if unhex(s[i]) > 15 {
			return false
		}
	}
	return true
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 255
}

// parser walks one header value. Positions in its errors are byte offsets:
// they say where without repeating what.
type parser struct {
	s string
	i int
}

func (p *parser) done() bool { return p.i >= len(p.s) }
func (p *parser) peek() byte { return p.s[p.i] }

// skipSpace skips linear white space, a folded line (CRLF then a space or
// tab) included, and reports whether there was any.
func (p *parser) skipSpace() bool {
	start := p.i
	for !p.done() {
		switch c := p.peek(); {
		case c == ' ' || c == '\t':
			p.i++
		case c == '\r' && p.i+2 < len(p.s) && p.s[p.i+1] == '\n' && (p.s[p.i+2] == ' ' || p.s[p.i+2] == '\t'):
			p.i += 3
		default:
			return p.i > start
		}
	}
	return p.i > start
}

// token reads a token (RFC 3261 §25 token, with RFC 7230's tchar).
func (p *parser) token() string {
	start := p.i
	for !p.done() && isTokenChar(p.peek()) {
		p.i++
	}
	return p.s[start:p.i]
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-.!%*_+`'~#$&^|", c) >= 0
}

// value reads a token or a quoted string of at most limit bytes once
// unescaped.
func (p *parser) value(limit int) (string, error) {
	if p.done() {
		return "", fmt.Errorf("%w: value expected at byte %d", ErrMalformed, p.i)
	}
	if p.peek() != '"' {
		v := p.token()
		if v == "" {
			return "", fmt.Errorf("%w: value expected at byte %d", ErrMalformed, p.i)
		}
		if len(v) > limit {
			return "", fmt.Errorf("%w: value at byte %d longer than %d bytes", ErrMalformed, p.i-len(v), limit)
		}
		return v, nil
	}
	start := p.i
	p.i++
	var b strings.Builder
	for {
		if p.done() {
			return "", fmt.Errorf("%w: quoted string from byte %d not closed", ErrMalformed, start)
		}
		c := p.peek()
		switch {
		case c == '"':
			p.i++
			return b.String(), nil
		case c == '\\':
			// quoted-pair: any character but CR and LF; control
			// characters are refused escaped as they are bare.
			if p.i+1 >= len(p.s) {
				return "", fmt.Errorf("%w: escape at the end, byte %d", ErrMalformed, p.i)
			}
			c = p.s[p.i+1]
			if c < 0x20 || c == 0x7f {
				return "", fmt.Errorf("%w: control character at byte %d", ErrMalformed, p.i+1)
			}
			p.i += 2
		case c == '\r':
			// A folded line inside the quotes is white space.
			if !p.skipSpace() {
				return "", fmt.Errorf("%w: bare CR at byte %d", ErrMalformed, p.i)
			}
			c = ' '
		case (c < 0x20 && c != '\t') || c == 0x7f:
			return "", fmt.Errorf("%w: control character at byte %d", ErrMalformed, p.i)
		default:
			p.i++
		}
		if b.Len() >= limit {
			return "", fmt.Errorf("%w: value at byte %d longer than %d bytes", ErrMalformed, start, limit)
		}
		b.WriteByte(c)
	}
}
