// Package bench is pushd's load generator for XMPP servers: c2s message
// throughput and latency between pairs of clients, and idle or hibernated
// sessions held open so that the server's memory per session can be
// measured from outside (RSS of its process).
//
// It owns the client side only and talks to any RFC 6120 server (pushd,
// Prosody, ejabberd) on the address it is given; `pushd bench c2s` and
// tests drive it. The client is a small hand-written one (STARTTLS,
// SCRAM-SHA-256, bind, XEP-0198 enable) whose receive path scans raw bytes
// instead of parsing XML, so that it is not the bottleneck: Result reports
// the client's CPU use next to the server's so that a run shows which side
// saturated.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Credentials is one account.
type Credentials struct {
	User     string // local part
	Password string
}

// UserCredentials makes n credentials from a fmt pattern with one %d
// (e.g. "bench%d", numbered from 0) and one password.
func UserCredentials(pattern, password string, n int) []Credentials {
	out := make([]Credentials, n)
	for i := range out {
		out[i] = Credentials{User: fmt.Sprintf(pattern, i), Password: password}
	}
	return out
}

// conn is one logged-in client stream.
type conn struct {
	raw net.Conn // TCP, for abrupt drops
	tls *tls.Conn
	r   *bufio.Reader
	w   *bufio.Writer
	jid string // full JID after bind
}

type dialConfig struct {
	addr, domain string
	cred         Credentials
	resource     string
	insecure     bool
	sm           bool // enable XEP-0198 with resume
	presence     bool
	push         *PushConfig
}

var errProto = errors.New("bench: protocol error")

func dial(ctx context.Context, dc dialConfig) (*conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", dc.addr)
	if err != nil {
		return nil, err
	}
	c := &conn{raw: raw}
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	if err := c.login(dc); err != nil {
		raw.Close()
		return nil, fmt.Errorf("%s: %w", dc.cred.User, err)
	}
	raw.SetDeadline(time.Time{})
	return c, nil
}

func (c *conn) login(dc dialConfig) error {
	// Plain stream, STARTTLS.
	c.r = bufio.NewReaderSize(c.raw, 4096)
	c.w = bufio.NewWriterSize(c.raw, 4096)
	dec, feats, err := c.open(dc.domain)
	if err != nil {
		return err
	}
	if !feats.has("starttls") {
		return fmt.Errorf("%w: no STARTTLS offered", errProto)
	}
	if err := c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"); err != nil {
		return err
	}
	if el, err := next(dec); err != nil {
		return err
	} else if el.XMLName.Local != "proceed" {
		return fmt.Errorf("%w: starttls answered with %s", errProto, el.XMLName.Local)
	}
	c.tls = tls.Client(c.raw, &tls.Config{ServerName: dc.domain, InsecureSkipVerify: dc.insecure}) //nolint:gosec // benches run against self-signed test servers when asked
	if err := c.tls.Handshake(); err != nil {
		return err
	}
	c.r = bufio.NewReaderSize(c.tls, 32<<10)
	c.w = bufio.NewWriterSize(c.tls, 32<<10)

	// SASL SCRAM-SHA-256.
	dec, feats, err = c.open(dc.domain)
	if err != nil {
		return err
	}
	if !feats.hasMech("SCRAM-SHA-256") {
		return fmt.Errorf("%w: SCRAM-SHA-256 not offered", errProto)
	}
	if err := c.scram(dec, dc.cred); err != nil {
		return err
	}

	// Bind.
	dec, feats, err = c.open(dc.domain)
	if err != nil {
		return err
	}
	if !feats.has("bind") {
		return fmt.Errorf("%w: no bind offered", errProto)
	}
	if err := c.send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>" + dc.resource + "</resource></bind></iq>"); err != nil {
		return err
	}
	el, err := next(dec)
	if err != nil {
		return err
	}
	if el.Type != "result" || el.Bind == nil {
		return fmt.Errorf("%w: bind failed: %s type=%s", errProto, el.XMLName.Local, el.Type)
	}
	c.jid = strings.TrimSpace(el.Bind.JID)
	if dc.sm {
		if !feats.has("sm") {
			return fmt.Errorf("%w: XEP-0198 not offered", errProto)
		}
		if err := c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>"); err != nil {
			return err
		}
		el, err := next(dec)
		if err != nil {
			return err
		}
		if el.XMLName.Local != "enabled" {
			return fmt.Errorf("%w: sm enable answered with %s", errProto, el.XMLName.Local)
		}
	}
	if dc.presence {
		if err := c.send("<presence/>"); err != nil {
			return err
		}
	}
	if dc.push != nil {
		return c.registerPush(dec, dc.push, dc.cred)
	}
	return nil
}

// registerPush registers the device with a push component in one XEP-0050
// execute (p2's register-push-apns, as Conversations sends it) and enables
// XEP-0357 push on the server with the node and secret it answers.
func (c *conn) registerPush(dec *xml.Decoder, p *PushConfig, cred Credentials) error {
	field := func(v, val string) string { return "<field var='" + v + "'><value>" + val + "</value></field>" }
	if err := c.send("<iq type='set' id='push-reg' to='" + p.Component + "'><command xmlns='http://jabber.org/protocol/commands' node='register-push-apns' action='execute'>" +
		"<x xmlns='jabber:x:data' type='submit'>" + field("token", p.Token(cred)) + field("device-id", "bench") + field("key", p.Key) +
		"</x></command></iq>"); err != nil {
		return err
	}
	res, err := nextID(dec, "push-reg")
	if err != nil {
		return err
	}
	form := map[string]string{}
	if res.Command != nil {
		for _, f := range res.Command.Fields {
			form[f.Var] = strings.TrimSpace(f.Value)
		}
	}
	if res.Type != "result" || form["node"] == "" {
		return fmt.Errorf("%w: push registration answered type=%s", errProto, res.Type)
	}
	if err := c.send("<iq type='set' id='push-on'><enable xmlns='urn:xmpp:push:0' jid='" + form["jid"] + "' node='" + form["node"] + "'>" +
		"<x xmlns='jabber:x:data' type='submit'>" + field("FORM_TYPE", "http://jabber.org/protocol/pubsub#publish-options") + field("secret", form["secret"]) +
		"</x></enable></iq>"); err != nil {
		return err
	}
	res, err = nextID(dec, "push-on")
	if err != nil {
		return err
	}
	if res.Type != "result" {
		return fmt.Errorf("%w: push enable answered type=%s", errProto, res.Type)
	}
	return nil
}

// nextID skips what the server sends (presence, for one) up to the
// element with this id.
func nextID(dec *xml.Decoder, id string) (*element, error) {
	for {
		el, err := next(dec)
		if err != nil || el.ID == id {
			return el, err
		}
	}
}

// element is the little of each negotiation element we look at.
type element struct {
	XMLName xml.Name
	Type    string   `xml:"type,attr"`
	ID      string   `xml:"id,attr"`
	H       string   `xml:"h,attr"` // XEP-0198 <a h/>
	Text    string   `xml:",chardata"`
	Mechs   []string `xml:"mechanisms>mechanism"`
	Bind    *struct {
		JID string `xml:"jid"`
	} `xml:"bind"`
	Command *struct {
		Fields []struct {
			Var   string `xml:"var,attr"`
			Value string `xml:"value"`
		} `xml:"x>field"`
	} `xml:"command"`
	Children []struct {
		XMLName xml.Name
	} `xml:",any"`
}

func (e *element) has(local string) bool {
	if local == "bind" && e.Bind != nil {
		return true // the Bind field takes it from Children
	}
	for _, c := range e.Children {
		if c.XMLName.Local == local {
			return true
		}
	}
	return false
}

func (e *element) hasMech(m string) bool {
	for _, x := range e.Mechs {
		if strings.TrimSpace(x) == m {
			return true
		}
	}
	return false
}

// open writes a stream header and reads the server's header and features.
// The decoder reads c.r (a ByteReader) directly, so after negotiation no
// bytes are hidden in a decoder buffer.
func (c *conn) open(domain string) (*xml.Decoder, *element, error) {
	if err := c.send("<?xml version='1.0'?><stream:stream to='" + domain + "' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"); err != nil {
		return nil, nil, err
	}
	dec := xml.NewDecoder(c.r)
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		if se, ok := tok.(xml.StartElement); ok {
			if se.Name.Local != "stream" {
				return nil, nil, fmt.Errorf("%w: expected stream header, got %s", errProto, se.Name.Local)
			}
			break
		}
	}
	f, err := next(dec)
	if err != nil {
		return nil, nil, err
	}
	if f.XMLName.Local != "features" {
		return nil, nil, fmt.Errorf("%w: expected features, got %s", errProto, f.XMLName.Local)
	}
	return dec, f, nil
}

// next decodes the next top-level element of the stream.
func next(dec *xml.Decoder) (*element, error) {
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			var e element
			if err := dec.DecodeElement(&e, &t); err != nil {
				return nil, err
			}
			// A decoder made after the stream header knows no stream
			// prefix: the space is then the prefix itself.
			if t.Name.Local == "error" && (t.Name.Space == "stream" || t.Name.Space == "http://etherx.jabber.org/streams") {
				return nil, fmt.Errorf("%w: stream error %v", errProto, e.Children)
			}
			return &e, nil
		case xml.EndElement:
			return nil, fmt.Errorf("%w: stream closed", errProto)
		}
	}
}

func (c *conn) send(s string) error {
	if _, err := c.w.WriteString(s); err != nil {
		return err
	}
	return c.w.Flush()
}

func (c *conn) scram(dec *xml.Decoder, cred Credentials) error {
	nonce := rand.Text()
	user := strings.NewReplacer("=", "=3D", ",", "=2C").Replace(cred.User)
	bare := "n=" + user + ",r=" + nonce
	b64 := base64.StdEncoding
	if err := c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>" + b64.EncodeToString([]byte("n,,"+bare)) + "</auth>"); err != nil {
		return err
	}
	el, err := next(dec)
	if err != nil {
		return err
	}
	if el.XMLName.Local != "challenge" {
		return fmt.Errorf("%w: sasl: %s", errProto, el.XMLName.Local)
	}
	first, err := b64.DecodeString(strings.TrimSpace(el.Text))
	if err != nil {
		return err
	}
	attrs := scramAttrs(string(first))
	if !strings.HasPrefix(attrs["r"], nonce) {
		return fmt.Errorf("%w: sasl: bad server nonce", errProto)
	}
	salt, err := b64.DecodeString(attrs["s"])
	if err != nil {
		return err
	}
	iter, err := strconv.Atoi(attrs["i"])
	if err != nil || iter <= 0 || iter > 1<<20 {
		return fmt.Errorf("%w: sasl: bad iteration count %q", errProto, attrs["i"])
	}
	salted, err := saltedPassword(cred.Password, salt, iter)
	if err != nil {
		return err
	}
	clientKey := hmacSHA256(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	without := "c=biws,r=" + attrs["r"]
	authMsg := bare + "," + string(first) + "," + without
	sig := hmacSHA256(stored[:], authMsg)
	proof := make([]byte, len(clientKey))
	for i := range proof {
		proof[i] = clientKey[i] ^ sig[i]
	}
	final := without + ",p=" + b64.EncodeToString(proof)
	if err := c.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + b64.EncodeToString([]byte(final)) + "</response>"); err != nil {
		return err
	}
	el, err = next(dec)
	if err != nil {
		return err
	}
	if el.XMLName.Local != "success" {
		return fmt.Errorf("%w: sasl: %s (wrong password?)", errProto, el.XMLName.Local)
	}
	if txt := strings.TrimSpace(el.Text); txt != "" {
		v, err := b64.DecodeString(txt)
		if err != nil {
			return err
		}
		want := "v=" + b64.EncodeToString(hmacSHA256(hmacSHA256(salted, "Server Key"), authMsg))
		if !hmac.Equal(v, []byte(want)) {
			return fmt.Errorf("%w: sasl: bad server signature", errProto)
		}
	}
	return nil
}

// salted remembers SCRAM salted passwords, as real clients do (RFC 5802
// §5.1 lets them cache it), so that thousands of logins with one password
// do not measure the client's PBKDF2.
var salted sync.Map // password, salt, iterations → []byte

func saltedPassword(password string, salt []byte, iter int) ([]byte, error) {
	k := password + "\x00" + string(salt) + "\x00" + strconv.Itoa(iter)
	if v, ok := salted.Load(k); ok {
		return v.([]byte), nil
	}
	v, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err == nil {
		salted.Store(k, v)
	}
	return v, err
}

func scramAttrs(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if len(kv) >= 2 && kv[1] == '=' {
			m[kv[:1]] = kv[2:]
		}
	}
	return m
}

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// close ends the stream politely.
func (c *conn) close() {
	c.raw.SetDeadline(time.Now().Add(time.Second))
	c.w.WriteString("</stream:stream>")
	c.w.Flush()
	c.raw.Close()
}

// drop closes the TCP connection abruptly: no stream close, no TLS
// close_notify, so a server with XEP-0198 hibernates the session.
func (c *conn) drop() { c.raw.Close() }

var bodyOpen = []byte("<body>bench ")

// scanBodies finds complete "<body>bench SEQ NANOS</body>" in buf, calls fn
// for each and returns how many bytes were consumed.
func scanBodies(buf []byte, fn func(seq, nanos int64)) int {
	consumed := 0
	for {
		i := bytes.Index(buf[consumed:], bodyOpen)
		if i < 0 {
			// Keep a tail that may hold the start of a marker.
			if keep := len(buf) - consumed; keep > len(bodyOpen) {
				consumed = len(buf) - len(bodyOpen)
			}
			return consumed
		}
		start := consumed + i + len(bodyOpen)
		end := bytes.IndexByte(buf[start:], '<')
		if end < 0 {
			return consumed + i
		}
		f := bytes.Fields(buf[start : start+end])
		if len(f) == 2 {
			seq, err1 := strconv.ParseInt(string(f[0]), 10, 64)
			ns, err2 := strconv.ParseInt(string(f[1]), 10, 64)
			if err1 == nil && err2 == nil {
				fn(seq, ns)
			}
		}
		consumed = start + end
	}
}
