package component

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"

	"pushd/component/dispatch"
	"pushd/component/payload"
	"pushd/internal/stanza"
)

// publish serves an XEP-0357 publish from the router.
func (c *Component) publish(ctx context.Context, iq, ps *stanza.Element) (*stanza.Element, *stanzaError) {
	pub := ps.Child(nsPubsub, "publish")
	if pub == nil {
		return nil, errServiceUnavailable // other pubsub operations: not a pubsub service
	}
	node := pub.Get("node")
	var secret string
	if po := ps.Child(nsPubsub, "publish-options"); po != nil {
		secret = parseForm(po.Child(nsData, "x")).get("secret")
	}
	from := iq.Get("from")
	tid := dispatch.NewTrackingID()
	log := c.log.With("tid", tid, c.red.Attr("from", bareJID(from)))
	dev, err := c.reg.Check(node, secret, from)
	if errors.Is(err, ErrNotFound) {
		c.m.publish("item_not_found")
		log.Info("push publish refused: unknown node or wrong secret")
		return nil, errItemNotFound
	}
	if err != nil {
		c.m.publish("error")
		log.Error("push publish: registry", "err", err)
		return nil, &stanzaError{Type: "wait", Condition: "internal-server-error"}
	}
	if !dev.Wants(payload.ChannelMessage) {
		c.m.publish("channel_off")
		log.Info("push publish ignored: device asked for no message pushes")
		return iqResult(iq, c.cfg.Domain), nil
	}
	p, enc := summary(pub, c.cfg.Now().UnixMilli())
	job := dispatch.Job{TrackingID: tid, Registration: dev.Registration(), Payload: p, Encrypted: enc}
	_, err = c.dispatch.Submit(ctx, job)
	if errors.Is(err, payload.ErrNotCiphertext) || errors.Is(err, payload.ErrClearPersonal) || errors.Is(err, payload.ErrType) {
		// What the router sent cannot leave as it is: wake the device
		// without content rather than not at all.
		log.Warn("push publish: payload unusable, sending a wake-up", "err", err)
		job.Payload, job.Encrypted = payload.Payload{Type: payload.TypeMessage, Count: p.Count, TS: p.TS}, ""
		_, err = c.dispatch.Submit(ctx, job)
	}
	switch {
	case err == nil, errors.Is(err, dispatch.ErrDuplicate):
	case errors.Is(err, dispatch.ErrBusy), errors.Is(err, dispatch.ErrClosed):
		c.m.publish("busy")
		log.Warn("push publish deferred: dispatcher busy", "err", err)
		return nil, errResourceConstraint
	default:
		c.m.publish("error")
		log.Error("push publish: dispatch refused", "err", err)
		return nil, &stanzaError{Type: "wait", Condition: "internal-server-error"}
	}
	c.m.publish("accepted")
	log.Info("push publish accepted", "provider", dev.Provider, "sealed", enc != "" || len(dev.Key) > 0,
		"router_encrypted", enc != "")
	return iqResult(iq, c.cfg.Domain), nil
}

// summary reads the notification of a publish: the urn:xmpp:push:summary
// form, or a router-encrypted payload (tigase:push:encrypt:0), which is
// passed through as nonce ‖ ciphertext ‖ tag and then carries no clear
// personal field.
func summary(pub *stanza.Element, now int64) (payload.Payload, string) {
	p := payload.Payload{Type: payload.TypeMessage, TS: now}
	item := pub.Child(nsPubsub, "item")
	if item == nil {
		return p, ""
	}
	n := item.Child(stanza.NSPush, "notification")
	if n == nil {
		return p, ""
	}
	for _, x := range n.Elements() {
		if !x.Is(nsData, "x") {
			continue
		}
		f := parseForm(x)
		if ft := f.get("FORM_TYPE"); ft != "" && ft != nsPushSummary {
			continue
		}
		if cnt, err := strconv.Atoi(f.get("message-count")); err == nil && cnt > 0 {
			p.Count = cnt
		}
		p.From = f.get("last-message-sender")
		p.Body = f.get("last-message-body")
	}
	if e := n.Child(nsTigaseEncrypt, "encrypted"); e != nil {
		return payload.Payload{Type: payload.TypeMessage, Count: p.Count, TS: now}, routerEnc(e)
	}
	return p, ""
}

// routerEnc joins Tigase's iv attribute and base64 ciphertext (with tag)
// into payload v1's enc form. A malformed value comes back as it is, for
// the dispatcher to refuse (and the caller to fall back to a wake-up).
func routerEnc(e *stanza.Element) string {
	data := strings.TrimSpace(e.Text())
	iv, err1 := base64.StdEncoding.DecodeString(e.Get("iv"))
	ct, err2 := base64.StdEncoding.DecodeString(data)
	if err1 != nil || err2 != nil || len(iv) != payload.NonceSize {
		if data == "" {
			return "!"
		}
		return data
	}
	return base64.StdEncoding.EncodeToString(append(iv, ct...))
}
