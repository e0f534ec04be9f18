package component

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	mcomponent "mellium.im/xmpp/component"
	"mellium.im/xmpp/jid"
)

// Run keeps the link to the router up until ctx ends: dial, XEP-0114
// handshake, serve, and on any loss reconnect after a backoff (min·2^(n-1)
// capped at max, jittered; the count restarts after a link that
// negotiated). It returns nil when ctx ends.
func (c *Component) Run(ctx context.Context) error {
	dial := c.cfg.Dial
	if dial == nil {
		if c.cfg.Router == "" {
			return errors.New("component: no router address")
		}
		dial = func(ctx context.Context) (net.Conn, error) {
			d := net.Dialer{Timeout: c.cfg.NegotiationTimeout, KeepAlive: 15 * time.Second}
			return d.DialContext(ctx, "tcp", c.cfg.Router)
		}
	}
	failures := 0
	for ctx.Err() == nil {
		c.m.reconnects.Inc()
		conn, err := dial(ctx)
		if err == nil {
			var negotiated bool
			negotiated, err = c.serve(ctx, conn)
			if negotiated {
				failures = 0
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		failures++
		wait := c.backoff(failures)
		c.log.Warn("push component link down; reconnecting", "err", err, "backoff", wait, "attempt", failures)
		if c.cfg.Sleep(ctx, wait) != nil {
			return nil
		}
	}
	return nil
}

func (c *Component) backoff(n int) time.Duration {
	d := c.cfg.BackoffMin
	for i := 1; i < n && d < c.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.cfg.BackoffMax)
	return d/2 + time.Duration(c.cfg.Jitter()*float64(d/2))
}

// ServeConn runs the component on a connection the caller opened: the
// XEP-0114 handshake, then stanzas until the link ends or ctx does. It
// does not reconnect (Run does).
func (c *Component) ServeConn(ctx context.Context, conn net.Conn) error {
	_, err := c.serve(ctx, conn)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (c *Component) serve(ctx context.Context, conn net.Conn) (negotiated bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	defer conn.Close()

	addr, err := jid.Parse(c.cfg.Domain)
	if err != nil {
		return false, fmt.Errorf("component: domain: %w", err)
	}
	nctx, ncancel := context.WithTimeout(ctx, c.cfg.NegotiationTimeout)
	sess, err := mcomponent.NewSession(nctx, addr, []byte(c.cfg.Secret), conn)
	ncancel()
	if err != nil {
		return false, fmt.Errorf("component: handshake: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	c.up.Store(true)
	c.m.linkUp.Set(1)
	defer func() {
		c.up.Store(false)
		c.m.linkUp.Set(0)
	}()
	c.log.Info("push component linked", "domain", c.cfg.Domain)
	// Serve handles one stanza at a time under the session's lock: the
	// handler answers through the encoder it is given, never through the
	// session (that would deadlock). Work per stanza is bounded (a registry
	// lookup, one dispatcher Submit), so in-line handling keeps order and
	// needs no goroutine per stanza.
	err = sess.Serve(xmpp.HandlerFunc(func(t xmlstream.TokenReadEncoder, start *xml.StartElement) error {
		el, err := readElement(t, *start)
		if err != nil {
			return fmt.Errorf("component: read stanza: %w", err)
		}
		reply := c.Handle(ctx, el)
		if reply == nil {
			return nil
		}
		return writeElement(t, reply)
	}))
	if err == nil {
		err = errors.New("component: router closed the stream")
	}
	return true, err
}
