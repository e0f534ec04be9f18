package router

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
)

// Any node serves any client (BEHAVIOUR H7). A client that authenticated
// here but whose user's sessions live on another node is not sent away:
// this node opens a stream to that node's client listener, logs in there
// on the client's behalf with the edge mechanism below, and from then on
// relays the client's stream both ways, byte for byte. The client's
// restarted stream, its bind or XEP-0198 resumption, its session, queues
// and push decisions are all the primary's, as if the client had dialled
// it; this node keeps only the client's TCP/TLS connection.
//
// When the relayed node goes away (it died, or handed the user over), the
// stream is carried on to the node that serves the user next (carry.go);
// where it cannot be, the client's connection is closed: it reconnects,
// to any node, and resumes its stream where its user lives now, which
// holds the replicated session (H4).

// edgeMechanism is the SASL mechanism by which a node logs a relayed
// client in at the user's node. It is never offered in the stream
// features; a node accepts it only under TLS and only from a peer that
// proves it holds the cluster's relay key, bound to this TLS session
// (its exporter), so that a man in the middle of the two nodes' TLS
// cannot pass the proof on. The answer proves the same of the accepting
// node.
const edgeMechanism = "X-PUSHD-EDGE"

// errRelayed: the stream was relayed to another node until one side
// closed; nothing is left to do with the connection.
var errRelayed = errors.New("router: stream relayed")

// relayDialTimeout bounds the dial and the login at the user's node.
const relayDialTimeout = 5 * time.Second

func edgeProof(key []byte, side, user, nonce string, exporter []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("pushd edge " + side + "\x00" + user + "\x00" + nonce + "\x00"))
	m.Write(exporter)
	return m.Sum(nil)
}

func tlsExporter(conn net.Conn) ([]byte, error) {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return nil, errors.New("router: edge login needs TLS")
	}
	cs := tc.ConnectionState()
	return cs.ExportKeyingMaterial("EXPORTER-pushd-edge", nil, 32)
}

// relay carries the authenticated client's stream to node, which serves
// its user and takes clients at addr, until either side ends it (see
// carrier for what happens when node goes away).
func (c *c2s) relay(node, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), relayDialTimeout)
	defer cancel()
	up, err := c.srv.edgeLogin(ctx, addr, c.user)
	if err != nil {
		c.srv.log.Warn("cluster: relay to the user's node failed", "user", c.srv.Redact(c.user.String()), "err", err)
		// The client authenticated and restarts its stream: the error goes
		// in the new one (RFC 6120 §4.3.2), which fail writes.
		if _, herr := c.readHeader(); herr != nil {
			return herr
		}
		return seeOtherHost("")
	}
	// The client's restarted stream is read by the relay's scanner from
	// its first byte: what it writes after its header is passed on as it
	// came.
	cs := stanza.NewScanner(c.conn, c.srv.cfg.Limits)
	_, hdr, err := cs.Header()
	if err == nil {
		err = c.checkHeader(hdr, stanza.NSClient)
	}
	if err != nil {
		_ = up.Close()
		return err
	}
	_ = c.conn.SetDeadline(time.Time{})
	c.srv.cfg.Metrics.relayed.Inc()
	defer c.srv.cfg.Metrics.relayed.Dec()
	k := &carrier{c: c, user: c.user.String(), node: node, cs: cs, decls: prefixDecls(hdr)}
	return k.run(up)
}

// edgeLogin opens a stream to the client listener at addr and logs user in
// with the edge mechanism; the returned connection is at the point where
// the stream restarts after SASL success.
func (s *Server) edgeLogin(ctx context.Context, addr string, user jid.JID) (net.Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	conn, err := s.edgeNegotiate(raw, user)
	if err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("edge login at %s: %w", addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

func (s *Server) edgeNegotiate(raw net.Conn, user jid.JID) (net.Conn, error) {
	open := func(conn net.Conn) (*stanza.Reader, *stanza.Element, error) {
		hdr := "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='" +
			s.domain.String() + "' version='1.0'>"
		if _, err := io.WriteString(conn, hdr); err != nil {
			return nil, nil, err
		}
		r := stanza.NewReader(conn, s.cfg.Limits)
		if _, err := r.Header(); err != nil {
			return nil, nil, err
		}
		feats, err := r.Next()
		if err != nil {
			return nil, nil, err
		}
		if !feats.Is(stanza.NSStream, "features") {
			return nil, nil, fmt.Errorf("expected features, got %s", feats.Name.Local)
		}
		return r, feats, nil
	}
	r, feats, err := open(raw)
	if err != nil {
		return nil, err
	}
	if feats.Child(stanza.NSTLS, "starttls") == nil {
		return nil, errors.New("no STARTTLS offered")
	}
	if _, err := io.WriteString(raw, `<starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"/>`); err != nil {
		return nil, err
	}
	if el, err := r.Next(); err != nil {
		return nil, err
	} else if !el.Is(stanza.NSTLS, "proceed") {
		return nil, errors.New("STARTTLS refused")
	}
	// The peer's certificate is not what authenticates it (nodes make
	// their own by default): the exchange below is, bound to this session.
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) //nolint:gosec // authenticated by the channel-bound edge proof
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	r, _, err = open(tc)
	if err != nil {
		return nil, err
	}
	exporter, err := tlsExporter(tc)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	n := hex.EncodeToString(nonce)
	name := user.String()
	msg := name + "\x00" + n + "\x00" + base64.StdEncoding.EncodeToString(edgeProof(s.cfg.RelayKey, "client", name, n, exporter))
	if _, err := io.WriteString(tc, `<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="`+edgeMechanism+`">`+
		base64.StdEncoding.EncodeToString([]byte(msg))+`</auth>`); err != nil {
		return nil, err
	}
	el, err := r.Next()
	if err != nil {
		return nil, err
	}
	if !el.Is(stanza.NSSASL, "success") {
		return nil, fmt.Errorf("edge login refused: %s", stanza.Marshal(el, ""))
	}
	proof, err := decodeSASL(el)
	if err != nil || !hmac.Equal(proof, edgeProof(s.cfg.RelayKey, "server", name, n, exporter)) {
		return nil, errors.New("the user's node did not prove the relay key")
	}
	return tc, nil
}

// edgeAuth accepts a relayed client's login from another node (the
// mechanism's other side). It returns the user, or a SASL failure.
func (c *c2s) edgeAuth(auth *stanza.Element) (jid.JID, error) {
	data, err := decodeSASL(auth)
	if err != nil {
		return jid.JID{}, err
	}
	parts := bytes.SplitN(data, []byte{0}, 3)
	if len(parts) != 3 {
		return jid.JID{}, errSASLMalformed
	}
	name, nonce := string(parts[0]), string(parts[1])
	proof, err := base64.StdEncoding.DecodeString(string(parts[2]))
	if err != nil {
		return jid.JID{}, errSASLMalformed
	}
	exporter, err := tlsExporter(c.conn)
	if err != nil {
		return jid.JID{}, errSASLFailed
	}
	if !hmac.Equal(proof, edgeProof(c.srv.cfg.RelayKey, "client", name, nonce, exporter)) {
		return jid.JID{}, errSASLFailed
	}
	user, err := jid.Parse(name)
	if err != nil || user.Localpart() == "" || user.Resourcepart() != "" || !strings.EqualFold(user.Domainpart(), c.srv.domain.Domainpart()) {
		return jid.JID{}, errSASLFailed
	}
	c.out = appendSASL(c.out, "success", edgeProof(c.srv.cfg.RelayKey, "server", name, nonce, exporter))
	if err := c.flush(); err != nil {
		return jid.JID{}, err
	}
	c.relayedIn = true
	return user, nil
}

// trackRelay keeps the relayed upstream connections so that Close ends
// them with the listeners.
func (s *Server) trackRelay(conn net.Conn, open bool) {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if open {
		s.live[conn] = struct{}{}
	} else {
		delete(s.live, conn)
	}
}
