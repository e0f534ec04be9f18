package router

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
	"pushd/jsm"
)

// c2s is one client connection from accept until it is bound (or resumed)
// and then while it reads the bound stream.
type c2s struct {
	srv    *Server
	conn   net.Conn
	r      *stanza.Reader
	secure bool
	user   jid.JID // bare JID once authenticated
	authed bool
	fails  int
	out    []byte // negotiation output, written synchronously
	sentHd bool
	bucket bucket
	// relayedIn: another node logged this client in here (edgeAuth); it
	// is not relayed again.
	relayedIn bool
}

func (s *Server) serveC2S(conn net.Conn, directTLS bool) {
	c := &c2s{srv: s, conn: conn, bucket: newBucket(s.cfg.RateLimit, s.cfg.RateBurst)}
	_ = conn.SetDeadline(time.Now().Add(s.cfg.NegotiationTimeout))
	if directTLS {
		if err := c.handshakeTLS(); err != nil {
			return
		}
	}
	st, err := c.negotiate()
	if errors.Is(err, errRelayed) {
		return
	}
	if err != nil {
		c.fail(err)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	c.serveStream(st)
}

// fail ends a stream that is still being negotiated.
func (c *c2s) fail(err error) {
	se := readError(err)
	if se == nil {
		return
	}
	c.srv.cfg.Metrics.streamErrors.WithLabelValues(se.Condition).Inc()
	c.header("")
	c.out = appendStreamError(c.out, se)
	c.flush()
	if tc, ok := c.conn.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
	// Read what the peer still sends until it hangs up, briefly, so that
	// the error is not lost to a TCP reset.
	_ = c.conn.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.conn, 1<<16))
}

func (c *c2s) header(id string) {
	if c.sentHd {
		return
	}
	c.sentHd = true
	if id == "" {
		id = randomID(8)
	}
	c.out = append(c.out, "<?xml version='1.0'?>"...)
	c.out = stanza.AppendStart(c.out, "stream:stream",
		"xmlns", stanza.NSClient, "xmlns:stream", stanza.NSStream,
		"id", id, "from", c.srv.domain.String(), "version", "1.0", "xml:lang", "en")
}

func (c *c2s) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.conn.Write(c.out)
	c.out = c.out[:0]
	return err
}

func (c *c2s) handshakeTLS() error {
	if c.srv.cfg.TLS == nil {
		return errors.New("router: no TLS configured")
	}
	tc := tls.Server(c.conn, c.srv.cfg.TLS)
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.conn = tc
	c.secure = true
	return nil
}

// readHeader reads and checks the header of a new stream (the first, or
// one restarted after TLS or SASL); ours is not sent yet.
func (c *c2s) readHeader() (xml.StartElement, error) {
	c.r = stanza.NewReader(c.conn, c.srv.cfg.Limits)
	c.sentHd = false
	hdr, err := c.r.Header()
	if err != nil {
		return hdr, err
	}
	return hdr, c.checkHeader(hdr, stanza.NSClient)
}

// openStream reads the client's stream header and answers with ours and
// the features of this stage.
func (c *c2s) openStream() error {
	hdr, err := c.readHeader()
	if err != nil {
		return err
	}
	if c.secure && !c.authed && c.redirects() {
		if err := c.redirectClaimed(hdr); err != nil {
			return err
		}
	}
	c.header("")
	c.out = append(c.out, "<stream:features>"...)
	tlsOffered := !c.secure && c.srv.cfg.TLS != nil
	switch {
	case !c.authed:
		if tlsOffered {
			c.out = append(c.out, `<starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls">`...)
			if c.srv.cfg.RequireTLS {
				c.out = append(c.out, "<required/>"...)
			}
			c.out = append(c.out, "</starttls>"...)
		}
		if c.secure || !c.srv.cfg.RequireTLS {
			c.out = append(c.out, `<mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl">`...)
			for _, m := range c.mechanisms() {
				c.out = append(c.out, "<mechanism>"+m+"</mechanism>"...)
			}
			c.out = append(c.out, "</mechanisms>"...)
		}
	default:
		c.out = append(c.out, `<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/>`+
			`<session xmlns="urn:ietf:params:xml:ns:xmpp-session"><optional/></session>`+
			`<sm xmlns="urn:xmpp:sm:3"/><csi xmlns="urn:xmpp:csi:0"/>`...)
	}
	c.out = append(c.out, "</stream:features>"...)
	return c.flush()
}

// checkHeader validates a stream header (RFC 6120 §4.7, §4.9.3).
func (c *c2s) checkHeader(hdr xml.StartElement, defaultNS string) error {
	if hdr.Name.Space != stanza.NSStream || hdr.Name.Local != "stream" {
		return errInvalidNamespace
	}
	var to, version, ns string
	for _, a := range hdr.Attr {
		switch {
		case a.Name.Space == "" && a.Name.Local == "xmlns":
			ns = a.Value
		case a.Name.Space == "" && a.Name.Local == "to":
			to = a.Value
		case a.Name.Space == "" && a.Name.Local == "version":
			version = a.Value
		}
	}
	if ns != defaultNS {
		return errInvalidNamespace
	}
	if !strings.EqualFold(to, c.srv.domain.String()) {
		return errHostUnknown
	}
	if major, _, _ := strings.Cut(version, "."); major != "1" {
		return errUnsupportedVer
	}
	return nil
}

func (c *c2s) mechanisms() []string {
	m := []string{"SCRAM-SHA-256", "SCRAM-SHA-1"}
	if c.secure || c.srv.cfg.AllowPlainWithoutTLS {
		m = append(m, "PLAIN")
	}
	return m
}

// negotiate runs the stream from its first header until a resource is
// bound or a stream is resumed, and returns the bound stream.
func (c *c2s) negotiate() (*stream, error) {
	if err := c.openStream(); err != nil {
		return nil, err
	}
	for {
		el, err := c.r.Next()
		if err != nil {
			return nil, err
		}
		switch {
		case el.Is(stanza.NSTLS, "starttls"):
			if c.secure || c.authed || c.srv.cfg.TLS == nil {
				return nil, errUnsupportedType
			}
			c.out = append(c.out, `<proceed xmlns="urn:ietf:params:xml:ns:xmpp-tls"/>`...)
			if err := c.flush(); err != nil {
				return nil, err
			}
			if err := c.handshakeTLS(); err != nil {
				return nil, err
			}
			if err := c.openStream(); err != nil {
				return nil, err
			}
		case el.Is(stanza.NSSASL, "auth"):
			if c.authed {
				return nil, errUnsupportedType
			}
			ok, err := c.authenticate(el)
			if err != nil {
				return nil, err
			}
			if ok {
				c.authed = true
				if here, node, addr := c.home(); !here {
					// This user's sessions live on another node (H1):
					// carried there (H7), or sent there.
					if !c.redirects() && !c.relayedIn && addr != "" {
						return nil, c.relay(node, addr)
					}
					// The client has restarted its stream on <success/>
					// and parses from a fresh header: the error goes
					// after ours, in the new stream (RFC 6120 §4.3.2,
					// §6.4.6), which fail writes. A stream another node
					// relays here is not sent on: that node's view and
					// this one's differ for a moment; the client is told
					// to try again.
					if _, err := c.readHeader(); err != nil {
						return nil, err
					}
					if c.relayedIn {
						addr = ""
					}
					return nil, seeOtherHost(addr)
				}
				if err := c.openStream(); err != nil {
					return nil, err
				}
			}
		case el.Is(stanza.NSClient, "iq") && c.authed && el.Child(stanza.NSBind, "bind") != nil:
			st, err := c.bind(el)
			if st != nil || err != nil {
				return st, err
			}
		case el.Is(stanza.NSSM, "resume") && c.authed:
			st, err := c.resume(el)
			if st != nil || err != nil {
				return st, err
			}
		case el.IsStanza() || el.Name.Space == stanza.NSSM || el.Name.Space == stanza.NSCSI:
			// Stanzas before authentication and binding are refused
			// (RFC 6120 §6.4.1, §7.1): the client skipped a step.
			return nil, errNotAuthorized
		default:
			return nil, errUnsupportedType
		}
	}
}

// redirects reports whether clients of other nodes are sent there with
// see-other-host rather than relayed (H7).
func (c *c2s) redirects() bool { return c.srv.cfg.Redirect || c.srv.cfg.RelayKey == nil }

// home says whether the authenticated user's sessions live on this node.
// A stream another node relays here came because that node's view names
// this one: this node may not have noticed the same failure yet, and
// waits for its own view to agree rather than refuse at once.
func (c *c2s) home() (here bool, node, c2sAddr string) {
	if c.srv.cfg.Cluster == nil {
		return true, "", ""
	}
	if c.relayedIn {
		return c.srv.cfg.Cluster.Claimed(c.user.String())
	}
	return c.srv.cfg.Cluster.Home(c.user.String())
}

// redirectClaimed returns see-other-host when the stream header names, in
// 'from' (RFC 6120 §4.7.1), a user of this domain whose sessions live on
// another node, so that the client goes there before it authenticates
// here for nothing.
//
// The claim is not authenticated, and that is harmless: placement is a
// hash of the JID over the member list, whether or not the account
// exists, so the answer tells only which node would serve that name, and
// the client that lied is the only one sent away; the JID it
// authenticates as is checked again after SASL. It is done only once the
// stream is under TLS (the caller's condition): RFC 6120 §4.9.3.19 says a
// server SHOULD NOT redirect before, where anyone on the path could
// forge the error. Neither slixmpp 1.8.3 nor @xmpp/client 0.14 sends
// 'from'; they are redirected after SASL.
func (c *c2s) redirectClaimed(hdr xml.StartElement) error {
	if c.srv.cfg.Cluster == nil {
		return nil
	}
	var from string
	for _, a := range hdr.Attr {
		if a.Name.Space == "" && a.Name.Local == "from" {
			from = a.Value
		}
	}
	user, err := jid.Parse(from)
	if err != nil || user.Localpart() == "" || !strings.EqualFold(user.Domainpart(), c.srv.domain.Domainpart()) {
		return nil // no claim, or not one of ours: SASL decides
	}
	here, _, addr := c.srv.cfg.Cluster.Home(user.Bare().String())
	if here || addr == "" {
		return nil
	}
	c.srv.log.Debug("redirected before authentication", "user", c.srv.Redact(user.Bare().String()))
	return seeOtherHost(addr)
}

// seeOtherHost is the stream error that sends a client to the node at
// addr, the host:port the cluster advertises for it ([cluster]
// c2s_advertise, checked when the config is read: a port and a host a
// client can dial). What the clients we test with make of it:
// @xmpp/client 0.14 connects to addr with its service's scheme (xmpp:,
// STARTTLS, for a client that came in that way: addr must be a STARTTLS
// listener), needs the port to build that service, checks the
// certificate against the domain, and follows every redirect, without a
// limit. slixmpp 1.8.3 parses host and port (5222 when absent, IPv6 in
// brackets) but then reconnects to its JID's domain on 5222 through SRV,
// not to addr (testdata/peers/peerlib.py works around it): in a
// deployment it lands wherever DNS sends it, is sent on again, and gives
// up after 5 redirects in a row. An empty address would send slixmpp
// nowhere and @xmpp/client to a broken service: such a client is told to
// try again instead.
func seeOtherHost(addr string) *StreamError {
	if addr == "" {
		return &StreamError{Condition: "internal-server-error", Text: "the node serving this account is not known yet; try again"}
	}
	return &StreamError{Condition: "see-other-host", Content: addr}
}

// bind binds the requested resource (or a random one) and returns the new
// stream; a malformed request gets an IQ error and nil, nil.
func (c *c2s) bind(iq *stanza.Element) (*stream, error) {
	if iq.Get("type") != "set" {
		c.out = stanza.Append(c.out, stanzaError(iq, "modify", "bad-request"), stanza.NSClient)
		return nil, c.flush()
	}
	res := strings.TrimSpace(iq.Child(stanza.NSBind, "bind").ChildText(stanza.NSBind, "resource"))
	if res == "" {
		res = randomID(6)
	}
	full, err := c.user.WithResource(res)
	if err != nil {
		reply := stanzaError(iq, "modify", "bad-request")
		reply.Set("from", "")
		reply.Set("to", "")
		c.out = stanza.Append(c.out, reply, stanza.NSClient)
		return nil, c.flush()
	}
	s := c.srv
	st := &stream{srv: s, id: jsm.StreamID(s.nextID.Add(1)), jid: full, from: full.String()}
	st.w = newWire(c.conn, s.cfg.WriteTimeout)
	result := stanza.New(stanza.NSClient, "iq", "type", "result", "id", iq.Get("id")).Add(
		stanza.New(stanza.NSBind, "bind").Add(stanza.New(stanza.NSBind, "jid").AddText(st.from)))
	st.w.write(func(b []byte) []byte { return stanza.Append(b, result, stanza.NSClient) })
	s.mu.Lock()
	s.streams[st.id] = st
	s.cfg.Metrics.streams.Inc()
	s.stepLocked(jsm.Bound{Stream: st.id, JID: full})
	s.mu.Unlock()
	s.log.Debug("stream bound", "stream", uint64(st.id))
	return st, nil
}

// resume handles XEP-0198 <resume/> in place of binding.
func (c *c2s) resume(el *stanza.Element) (*stream, error) {
	h64, perr := strconv.ParseUint(el.Get("h"), 10, 32)
	previd := el.Get("previd")
	s := c.srv
	failed := func() (*stream, error) {
		s.cfg.Metrics.resumes.WithLabelValues("failed").Inc()
		c.out = append(c.out, `<failed xmlns="urn:xmpp:sm:3"><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></failed>`...)
		return nil, c.flush()
	}
	s.mu.Lock()
	st := s.resumable[previd]
	if perr != nil || st == nil || !st.jid.Bare().Equal(c.user) {
		s.mu.Unlock()
		return failed()
	}
	st.mu.Lock()
	old := st.w
	st.mu.Unlock()
	if old != nil {
		// The client came back before we noticed its old connection die.
		s.stepLocked(jsm.Detached{Stream: st.id, Unacked: st.detach()})
		old.abandon()
	}
	s.mu.Unlock()
	// The count <resumed/> reports must cover only durable stanzas. The
	// wait is outside the router's lock: what it waits for may be on
	// another node that, to answer, routes a stanza here.
	if err := st.settle(); err != nil {
		return nil, errInternal
	}
	s.mu.Lock()
	st.mu.Lock()
	taken := st.w != nil
	st.mu.Unlock()
	if s.resumable[previd] != st || taken {
		// Expired, or resumed by another connection, meanwhile.
		s.mu.Unlock()
		return failed()
	}
	w := newWire(c.conn, s.cfg.WriteTimeout)
	acked, serr := st.resume(w, uint32(h64))
	if serr != nil {
		s.mu.Unlock()
		return nil, serr
	}
	s.stepLocked(jsm.Resumed{Stream: st.id, AckedSeq: acked})
	s.mu.Unlock()
	// Live again: the backup's record follows (before the queue's trim,
	// as for any acknowledgement).
	s.replicate(st)
	s.cfg.Metrics.resumes.WithLabelValues("resumed").Inc()
	s.cfg.Metrics.detached.Dec()
	return st, nil
}

// authenticate runs one SASL exchange (RFC 6120 §6.4). It returns true on
// success; a failed attempt is answered with <failure/> and false, and the
// stream ends after MaxAuthAttempts failures.
func (c *c2s) authenticate(auth *stanza.Element) (bool, error) {
	mech := auth.Get("mechanism")
	cond := ""
	switch {
	case c.srv.cfg.TLS != nil && c.srv.cfg.RequireTLS && !c.secure:
		cond = "encryption-required"
	case !contains(c.mechanisms(), mech):
		if mech == "PLAIN" {
			cond = "encryption-required"
		} else {
			cond = "invalid-mechanism"
		}
	}
	if cond == "" || mech == edgeMechanism && c.srv.cfg.RelayKey != nil && c.secure {
		cond = ""
		exchange := c.saslExchange
		if mech == edgeMechanism {
			exchange = func(_ string, auth *stanza.Element) (jid.JID, error) { return c.edgeAuth(auth) }
		}
		user, err := exchange(mech, auth)
		switch {
		case err == nil:
			c.user = user
			return true, nil
		case errors.Is(err, errSASLAborted):
			cond = "aborted"
		case errors.Is(err, errSASLMalformed):
			cond = "malformed-request"
		default:
			var se *StreamError
			if errors.As(err, &se) || !isSASLFailure(err) {
				return false, err
			}
			cond = "not-authorized"
		}
	}
	c.srv.cfg.Metrics.authFailures.Inc()
	if cond != "encryption-required" {
		// Asking in the clear is a client's mistake, not a guess.
		c.fails++
	}
	c.out = append(c.out, `<failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><`+cond+`/></failure>`...)
	if err := c.flush(); err != nil {
		return false, err
	}
	if c.fails >= c.srv.cfg.MaxAuthAttempts {
		return false, &StreamError{Condition: "policy-violation", Text: "too many failed authentication attempts"}
	}
	return false, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func decodeSASL(el *stanza.Element) ([]byte, error) {
	text := strings.TrimSpace(el.Text())
	if text == "" || text == "=" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, errSASLMalformed
	}
	return b, nil
}

func appendSASL(b []byte, name string, data []byte) []byte {
	b = append(b, `<`+name+` xmlns="urn:ietf:params:xml:ns:xmpp-sasl">`...)
	switch {
	case len(data) > 0:
		b = base64.StdEncoding.AppendEncode(b, data)
	case name != "success":
		// An empty challenge is "=" (RFC 6120 §6.4.2); an empty success
		// simply has no additional data.
		b = append(b, '=')
	}
	return append(b, `</`+name+`>`...)
}
