package httpx

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// connect opens a CONNECT tunnel to addr over conn. With Digest auth the
// first CONNECT goes without credentials; the 407's challenge is answered
// on the same connection, or a new one if the proxy closed it.
func (d *Dialer) connect(ctx context.Context, conn net.Conn, addr string) (net.Conn, error) {
	p := d.cfg.Proxy
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
		defer conn.SetDeadline(time.Time{})
	}
	auth := ""
	if strings.EqualFold(p.Auth, "basic") {
		auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(p.User+":"+p.Password))
	}
	resp, br, err := roundTripConnect(conn, addr, auth)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusProxyAuthRequired && strings.EqualFold(p.Auth, "digest") {
		ch, ok := digestChallenge(resp.Header.Values("Proxy-Authenticate"))
		if !ok {
			return nil, fmt.Errorf("%w: proxy offered no Digest challenge", ErrProxyAuth)
		}
		auth, err = ch.authorize(p.User, p.Password, http.MethodConnect, addr)
		if err != nil {
			return nil, err
		}
		if resp.Close {
			// The proxy closed after the 407: the caller's conn is spent,
			// answer the challenge on a new one.
			conn.Close()
			nc, err := d.dialEach(ctx, "tcp", d.proxy.Host)
			if err != nil {
				return nil, fmt.Errorf("httpx: proxy %s: %w", d.proxy.Host, err)
			}
			conn = nc
		}
		resp, br, err = roundTripConnect(conn, addr, auth)
		if err != nil {
			return nil, err
		}
	}
	switch {
	case resp.StatusCode == http.StatusProxyAuthRequired:
		return nil, fmt.Errorf("%w (407 from %s, auth %q)", ErrProxyAuth, d.proxy.Host, p.Auth)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("httpx: proxy CONNECT %s: %s", d.proxy.Host, resp.Status)
	}
	if br.Buffered() > 0 {
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

func roundTripConnect(conn net.Conn, addr, auth string) (*http.Response, *bufio.Reader, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", addr, addr)
	if auth != "" {
		fmt.Fprintf(&b, "Proxy-Authorization: %s\r\n", auth)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return nil, nil, fmt.Errorf("httpx: proxy CONNECT: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, nil, fmt.Errorf("httpx: proxy CONNECT response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		// Drain a short error body so the connection can carry the retry.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
	return resp, br, nil
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// challenge is a parsed "Digest …" Proxy-Authenticate value.
type challenge struct {
	realm, nonce, opaque, algorithm, qop string
}

func digestChallenge(values []string) (challenge, bool) {
	for _, v := range values {
		scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
		if !strings.EqualFold(scheme, "Digest") {
			continue
		}
		params := parseParams(rest)
		c := challenge{realm: params["realm"], nonce: params["nonce"], opaque: params["opaque"], algorithm: params["algorithm"]}
		for _, q := range strings.Split(params["qop"], ",") {
			if strings.TrimSpace(q) == "auth" {
				c.qop = "auth"
			}
		}
		if c.nonce == "" {
			continue
		}
		return c, true
	}
	return challenge{}, false
}

// parseParams splits `a="x, y", b=z` into a map, honouring quotes.
func parseParams(s string) map[string]string {
	m := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		key, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		key = strings.ToLower(strings.TrimSpace(key))
		rest = strings.TrimSpace(rest)
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				b.WriteByte(rest[i])
			}
			val, rest = b.String(), rest[min(i+1, len(rest)):]
		} else {
			val, rest, _ = strings.Cut(rest, ",")
			val = strings.TrimSpace(val)
			rest = "," + rest
		}
		m[key] = val
		_, rest, _ = strings.Cut(rest, ",")
		s = rest
	}
	return m
}

func (c challenge) authorize(user, pass, method, uri string) (string, error) {
	var newHash func() hash.Hash
	switch strings.ToUpper(c.algorithm) {
	case "", "MD5":
		newHash = md5.New
	case "SHA-256":
		newHash = sha256.New
	default:
		return "", fmt.Errorf("%w: unsupported digest algorithm %q", ErrProxyAuth, c.algorithm)
	}
	h := func(s string) string {
		x := newHash()
		io.WriteString(x, s)
		return hex.EncodeToString(x.Sum(nil))
	}
	ha1 := h(user + ":" + c.realm + ":" + pass)
	ha2 := h(method + ":" + uri)
	var b strings.Builder
	fmt.Fprintf(&b, `Digest username=%q, realm=%q, nonce=%q, uri=%q`, user, c.realm, c.nonce, uri)
	if c.qop == "auth" {
		var raw [12]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return "", fmt.Errorf("httpx: cnonce: %w", err)
		}
		cnonce, nc := hex.EncodeToString(raw[:]), "00000001"
		resp := h(ha1 + ":" + c.nonce + ":" + nc + ":" + cnonce + ":auth:" + ha2)
		fmt.Fprintf(&b, `, qop=auth, nc=%s, cnonce=%q, response=%q`, nc, cnonce, resp)
	} else {
		fmt.Fprintf(&b, `, response=%q`, h(ha1+":"+c.nonce+":"+ha2))
	}
	if c.opaque != "" {
		fmt.Fprintf(&b, `, opaque=%q`, c.opaque)
	}
	if c.algorithm != "" {
		fmt.Fprintf(&b, `, algorithm=%s`, c.algorithm)
	}
	return b.String(), nil
}
