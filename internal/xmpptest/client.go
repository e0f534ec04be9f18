// Package xmpptest is a minimal, scriptable XMPP client for tests that
// need to send what no real client would: malformed XML, floods, stanzas
// out of order. Tests that exercise ordinary client behaviour use real
// peers (slixmpp, @xmpp/client) instead.
package xmpptest

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"

	"pushd/internal/stanza"
)

// Client is one raw connection to a server.
type Client struct {
	t      testing.TB
	Conn   net.Conn
	r      *stanza.Reader
	domain string
	// Features is the last <stream:features/> the server sent; nil when
	// the server answered a stream header with a stream error instead.
	Features *stanza.Element
	JID      string
	// From, when set, goes in the 'from' of the stream headers Open sends
	// (RFC 6120 §4.7.1).
	From string
	// pending is what the server sent in place of features, for Next.
	pending *stanza.Element
}

// Timeout bounds every read.
var Timeout = 10 * time.Second

// Dial connects and opens a stream to domain.
func Dial(t testing.TB, addr, domain string) *Client {
	t.Helper()
	return DialAs(t, addr, domain, "")
}

// Open sends a stream header and reads the server's header and features.
func (c *Client) Open() {
	c.t.Helper()
	from := ""
	if c.From != "" {
		from = ` from='` + c.From + `'`
	}
	c.Send(`<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='` + c.domain + `'` + from + ` version='1.0'>`)
	c.ReadHeader()
}

// ReadHeader reads the server's stream header and features. A stream
// error in place of the features (see-other-host after a restart) is
// left for Next and StreamError.
func (c *Client) ReadHeader() {
	c.t.Helper()
	c.r = stanza.NewReader(c.Conn, stanza.Limits{MaxBytes: 16 << 20, MaxDepth: 64})
	c.pending = nil
	_ = c.Conn.SetReadDeadline(time.Now().Add(Timeout))
	if _, err := c.r.Header(); err != nil {
		c.t.Fatalf("server header: %v", err)
	}
	f, err := c.Next()
	if err != nil {
		c.t.Fatalf("features: %v", err)
	}
	if f.Is(stanza.NSStream, "error") {
		c.Features, c.pending = nil, f
		return
	}
	c.Features = f
}

// Send writes raw XML.
func (c *Client) Send(raw string) {
	c.t.Helper()
	_ = c.Conn.SetWriteDeadline(time.Now().Add(Timeout))
	if _, err := io.WriteString(c.Conn, raw); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// TrySend writes raw XML and reports the error instead of failing: the
// server may already have closed the stream.
func (c *Client) TrySend(raw string) error {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(Timeout))
	_, err := io.WriteString(c.Conn, raw)
	return err
}

// Next reads the next top-level element.
func (c *Client) Next() (*stanza.Element, error) {
	if el := c.pending; el != nil {
		c.pending = nil
		return el, nil
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(Timeout))
	return c.r.Next()
}

// Expect reads elements until one satisfies match, failing after Timeout.
func (c *Client) Expect(what string, match func(*stanza.Element) bool) *stanza.Element {
	c.t.Helper()
	for {
		el, err := c.Next()
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(el) {
			return el
		}
	}
}

// StreamError reads until the stream ends and returns the stream error
// condition it carried ("" if the stream closed without one).
func (c *Client) StreamError() string {
	c.t.Helper()
	cond, _ := c.StreamErrorContent()
	return cond
}

// StreamErrorContent is StreamError that also returns the condition
// element's text: the address of see-other-host.
func (c *Client) StreamErrorContent() (condition, content string) {
	c.t.Helper()
	for {
		el, err := c.Next()
		if err != nil {
			return "", ""
		}
		if el.Is(stanza.NSStream, "error") {
			for _, ch := range el.Elements() {
				if ch.Name.Space == stanza.NSStreamErr && ch.Name.Local != "text" {
					return ch.Name.Local, ch.Text()
				}
			}
			return "?", ""
		}
	}
}

// StartTLS upgrades the stream without verifying the server certificate.
func (c *Client) StartTLS() {
	c.t.Helper()
	c.Send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`)
	if el, err := c.Next(); err != nil || !el.Is(stanza.NSTLS, "proceed") {
		c.t.Fatalf("starttls: %v %v", el, err)
	}
	tc := tls.Client(c.Conn, &tls.Config{InsecureSkipVerify: true, ServerName: c.domain})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("tls handshake: %v", err)
	}
	c.Conn = tc
	c.Open()
}

// AuthPlain authenticates with SASL PLAIN and returns "" on success or
// the failure condition. On success the stream is restarted.
func (c *Client) AuthPlain(user, password string) string {
	c.t.Helper()
	data := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	c.Send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>` + data + `</auth>`)
	el, err := c.Next()
	if err != nil {
		c.t.Fatalf("auth: %v", err)
	}
	switch {
	case el.Is(stanza.NSSASL, "success"):
		c.Open()
		return ""
	case el.Is(stanza.NSSASL, "failure"):
		if f := el.FirstElement(); f != nil {
			return f.Name.Local
		}
		return "?"
	}
	c.t.Fatalf("auth: unexpected %s", el)
	return ""
}

// Bind binds resource and returns the full JID.
func (c *Client) Bind(resource string) string {
	c.t.Helper()
	c.Send(`<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>` + resource + `</resource></bind></iq>`)
	el := c.Expect("bind result", func(e *stanza.Element) bool { return e.Get("id") == "bind1" })
	if el.Get("type") != "result" {
		c.t.Fatalf("bind: %s", el)
	}
	c.JID = el.Child(stanza.NSBind, "bind").ChildText(stanza.NSBind, "jid")
	return c.JID
}

// Login dials, upgrades to TLS, authenticates and binds.
func Login(t testing.TB, addr, domain, user, password, resource string) *Client {
	t.Helper()
	c := Dial(t, addr, domain)
	c.StartTLS()
	if cond := c.AuthPlain(user, password); cond != "" {
		t.Fatalf("login %s: %s", user, cond)
	}
	c.Bind(resource)
	return c
}

// Message sends a chat message.
func (c *Client) Message(to, body string) {
	c.t.Helper()
	c.Send(fmt.Sprintf(`<message type='chat' to='%s'><body>%s</body></message>`, to, body))
}

// ExpectBody waits for a message with the given body.
func (c *Client) ExpectBody(body string) {
	c.t.Helper()
	c.Expect("message "+body, func(e *stanza.Element) bool {
		return e.Is(stanza.NSClient, "message") && e.ChildText(stanza.NSClient, "body") == body
	})
}

// Closed reports whether the server has closed the connection (reading
// yields EOF or a reset rather than a timeout).
func (c *Client) Closed() bool {
	_ = c.Conn.SetReadDeadline(time.Now().Add(Timeout))
	buf := make([]byte, 512)
	for {
		_, err := c.Conn.Read(buf)
		if err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout()) || strings.Contains(err.Error(), "reset")
		}
	}
}

// DialAs is Dial with from in every stream header the client sends.
func DialAs(t testing.TB, addr, domain, from string) *Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c := &Client{t: t, Conn: conn, domain: domain, From: from}
	t.Cleanup(func() { _ = c.Conn.Close() })
	c.Open()
	return c
}

// DialRaw connects without opening a stream, for tests of bad headers.
func DialRaw(t testing.TB, addr string) *Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c := &Client{t: t, Conn: conn}
	t.Cleanup(func() { _ = c.Conn.Close() })
	return c
}

// ReadHeaderOnly reads the server's stream header and nothing more.
func (c *Client) ReadHeaderOnly() {
	c.t.Helper()
	c.r = stanza.NewReader(c.Conn, stanza.Limits{MaxBytes: 16 << 20, MaxDepth: 64})
	_ = c.Conn.SetReadDeadline(time.Now().Add(Timeout))
	if _, err := c.r.Header(); err != nil {
		c.t.Fatalf("server header: %v", err)
	}
}

// AuthSCRAM authenticates with SCRAM-SHA-1 or SCRAM-SHA-256 (mellium's
// client side) and returns "" on success or the failure condition.
func (c *Client) AuthSCRAM(mech, user, password string) string {
	c.t.Helper()
	m := sasl.ScramSha256
	if mech == "SCRAM-SHA-1" {
		m = sasl.ScramSha1
	}
	cs, _ := c.Conn.(*tls.Conn)
	opts := []sasl.Option{sasl.Credentials(func() ([]byte, []byte, []byte) { return []byte(user), []byte(password), nil })}
	if cs != nil {
		opts = append(opts, sasl.TLSState(cs.ConnectionState()))
	}
	n := sasl.NewClient(m, opts...)
	_, first, err := n.Step(nil)
	if err != nil {
		c.t.Fatalf("scram start: %v", err)
	}
	c.Send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='` + mech + `'>` + base64.StdEncoding.EncodeToString(first) + `</auth>`)
	for {
		el, err := c.Next()
		if err != nil {
			c.t.Fatalf("scram: %v", err)
		}
		data, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(el.Text()))
		switch {
		case el.Is(stanza.NSSASL, "challenge"):
			_, resp, err := n.Step(data)
			if err != nil {
				c.t.Fatalf("scram step: %v", err)
			}
			c.Send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + base64.StdEncoding.EncodeToString(resp) + `</response>`)
		case el.Is(stanza.NSSASL, "success"):
			// The server's final message proves it knew the credentials.
			if _, _, err := n.Step(data); err != nil {
				c.t.Fatalf("server signature: %v", err)
			}
			c.Open()
			return ""
		case el.Is(stanza.NSSASL, "failure"):
			if f := el.FirstElement(); f != nil {
				return f.Name.Local
			}
			return "?"
		default:
			c.t.Fatalf("scram: unexpected %s", el)
		}
	}
}

// DialTLS connects with direct TLS (XEP-0368) and opens a stream.
func DialTLS(t testing.TB, addr, domain string) *Client {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: Timeout}, "tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: domain})
	if err != nil {
		t.Fatalf("dial tls %s: %v", addr, err)
	}
	c := &Client{t: t, Conn: conn, domain: domain}
	t.Cleanup(func() { _ = c.Conn.Close() })
	c.Open()
	return c
}
