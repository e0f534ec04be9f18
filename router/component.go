package router

import (
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
	"pushd/jsm"
)

// componentLink is one connected XEP-0114 component.
type componentLink struct {
	domain string
	w      *wire
}

func (l *componentLink) send(el *stanza.Element) {
	l.w.write(func(b []byte) []byte { return stanza.AppendExternal(b, el, stanza.NSClient) })
}

// ServeComponentConn runs the accepting side of XEP-0114 on conn, which
// the caller connected some other way (pushd's own push component is
// linked in-process over a net.Pipe, through the same code path as any
// component on the network). It returns when the link ends.
func (s *Server) ServeComponentConn(conn net.Conn) {
	s.conns.Add(1)
	defer s.conns.Done()
	s.lnMu.Lock()
	s.live[conn] = struct{}{}
	s.lnMu.Unlock()
	defer func() {
		s.lnMu.Lock()
		delete(s.live, conn)
		s.lnMu.Unlock()
		_ = conn.Close()
	}()
	s.serveComponent(conn)
}

// serveComponent runs the accepting side of XEP-0114: header, handshake
// (compared in constant time, BEHAVIOUR S1), then stanzas both ways.
func (s *Server) serveComponent(conn net.Conn) {
	c := &c2s{srv: s, conn: conn, bucket: newBucket(s.cfg.RateLimit, s.cfg.RateBurst)}
	_ = conn.SetDeadline(time.Now().Add(s.cfg.NegotiationTimeout))
	link, err := c.componentHandshake()
	if err != nil {
		if se := readError(err); se != nil {
			s.log.Info("component refused", "condition", se.Condition)
		}
		c.fail(err)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	s.log.Info("component connected", "domain", link.domain)
	err = c.readComponent(link)
	s.mu.Lock()
	if s.components[link.domain] == link {
		delete(s.components, link.domain)
		s.stepLocked(jsm.ComponentDown{Domain: link.domain})
	}
	s.mu.Unlock()
	if se := readError(err); se != nil {
		link.w.close(appendStreamError(nil, se))
	} else {
		link.w.close([]byte("</stream:stream>"))
	}
	<-link.w.done
	s.log.Info("component disconnected", "domain", link.domain)
}

func (c *c2s) componentHandshake() (*componentLink, error) {
	s := c.srv
	c.r = stanza.NewReader(c.conn, s.cfg.Limits)
	hdr, err := c.r.Header()
	if err != nil {
		return nil, err
	}
	if hdr.Name.Space != stanza.NSStream || hdr.Name.Local != "stream" {
		return nil, errInvalidNamespace
	}
	var to, ns string
	for _, a := range hdr.Attr {
		if a.Name.Space == "" && a.Name.Local == "to" {
			to = strings.ToLower(a.Value)
		}
		if a.Name.Space == "" && a.Name.Local == "xmlns" {
			ns = a.Value
		}
	}
	id := randomID(8)
	c.sentHd = true
	c.out = append(c.out, "<?xml version='1.0'?>"...)
	c.out = stanza.AppendStart(c.out, "stream:stream", "xmlns", stanza.NSComponent, "xmlns:stream", stanza.NSStream, "id", id, "from", to)
	if ns != stanza.NSComponent {
		return nil, errInvalidNamespace
	}
	secret, ok := s.cfg.ComponentSecrets[to]
	if !ok {
		return nil, errHostUnknown
	}
	if err := c.flush(); err != nil {
		return nil, err
	}
	el, err := c.r.Next()
	if err != nil {
		return nil, err
	}
	if !el.Is(stanza.NSComponent, "handshake") && !el.Is(stanza.NSClient, "handshake") {
		return nil, errNotAuthorized
	}
	sum := sha1.Sum([]byte(id + secret))
	want := hex.EncodeToString(sum[:])
	got := strings.ToLower(strings.TrimSpace(el.Text()))
	if subtle.ConstantTimeCompare([]byte(want), []byte(got)) != 1 {
		return nil, errNotAuthorized
	}
	link := &componentLink{domain: to}
	s.mu.Lock()
	if _, taken := s.components[to]; taken {
		s.mu.Unlock()
		return nil, errConflict
	}
	link.w = newWire(c.conn, s.cfg.WriteTimeout)
	link.w.write(func(b []byte) []byte { return append(b, "<handshake/>"...) })
	s.components[to] = link
	s.stepLocked(jsm.ComponentUp{Domain: to})
	s.mu.Unlock()
	return link, nil
}

// readComponent reads stanzas from a component. Its 'from' must be the
// component's domain or an address at it (XEP-0114 §3.1).
func (c *c2s) readComponent(link *componentLink) error {
	for {
		el, err := c.r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if !c.bucket.take(time.Now()) {
			return errFlood
		}
		if !el.IsStanza() {
			return errUnsupportedType
		}
		from, err := jid.Parse(el.Get("from"))
		if err != nil || !strings.EqualFold(from.Domainpart(), link.domain) {
			return &StreamError{Condition: "invalid-from"}
		}
		c.srv.cfg.Metrics.stanzasIn.WithLabelValues(el.Name.Local).Inc()
		c.srv.Step(jsm.ComponentIn{Domain: link.domain, Stanza: el, Size: c.r.LastSize()})
	}
}
