package component

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"strconv"
	"strings"

	"pushd/component/dispatch"
	"pushd/component/payload"
	"pushd/internal/logline"
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
		secret = formValue(po.Child(nsData, "x"), "secret")
	}
	from := iq.Get("from")
	// The dispatcher makes up the tracking id of a push (a new id needs no
	// look-up among the answered ones, P5); a publish refused before it
	// gets there is given one for its log line.
	var tid string
	// Every line of this publish carries its tracking id and the redacted
	// publisher; typed attributes and no per-publish logger, as this runs
	// for every push.
	log := func(level slog.Level, msg string, attrs ...slog.Attr) {
		if !c.log.Enabled(ctx, level) {
			return
		}
		if tid == "" {
			tid = dispatch.NewTrackingID()
		}
		logline.Log(ctx, c.log, level, msg, append([]slog.Attr{slog.String("tid", tid), slog.String("from", c.red.Token(bareJID(from)))}, attrs...)...)
	}
	dev, err := c.reg.Check(node, secret, from)
	if errors.Is(err, ErrNotFound) {
		c.m.publish("item_not_found")
		log(slog.LevelInfo, "push publish refused: unknown node or wrong secret")
		return nil, errItemNotFound
	}
	if err != nil {
		c.m.publish("error")
		log(slog.LevelError, "push publish: registry", slog.Any("err", err))
		return nil, &stanzaError{Type: "wait", Condition: "internal-server-error"}
	}
	if !dev.Wants(payload.ChannelMessage) {
		c.m.publish("channel_off")
		log(slog.LevelInfo, "push publish ignored: device asked for no message pushes")
		return iqResult(iq, c.cfg.Domain), nil
	}
	p, enc := summary(pub, c.cfg.Now().UnixMilli())
	if enc == "" {
		p.Node = c.cfg.Node // sealed with the rest: the device learns where to come back
	}
	job := dispatch.Job{Registration: dev.Registration(), Payload: p, Encrypted: enc}
	tid, err = c.dispatch.Submit(ctx, job)
	if errors.Is(err, payload.ErrNotCiphertext) || errors.Is(err, payload.ErrClearPersonal) || errors.Is(err, payload.ErrType) {
		// What the router sent cannot leave as it is: wake the device
		// without content rather than not at all.
		log(slog.LevelWarn, "push publish: payload unusable, sending a wake-up", slog.Any("err", err))
		job.TrackingID = tid
		job.Payload, job.Encrypted = payload.Payload{Type: payload.TypeMessage, Count: p.Count, TS: p.TS}, ""
		tid, err = c.dispatch.Submit(ctx, job)
	}
	switch {
	case err == nil, errors.Is(err, dispatch.ErrDuplicate):
	case errors.Is(err, dispatch.ErrBusy), errors.Is(err, dispatch.ErrClosed):
		c.m.publish("busy")
		log(slog.LevelWarn, "push publish deferred: dispatcher busy", slog.Any("err", err))
		return nil, errResourceConstraint
	default:
		c.m.publish("error")
		log(slog.LevelError, "push publish: dispatch refused", slog.Any("err", err))
		return nil, &stanzaError{Type: "wait", Condition: "internal-server-error"}
	}
	c.m.publish("accepted")
	log(slog.LevelInfo, "push publish accepted", slog.String("provider", string(dev.Provider)),
		slog.Bool("sealed", enc != "" || len(dev.Key) > 0), slog.Bool("router_encrypted", enc != ""))
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
	for _, c := range n.Children {
		x, ok := c.(*stanza.Element)
		if !ok || !x.Is(nsData, "x") {
			continue
		}
		var f summaryForm
		f.read(x)
		if f.formType != "" && f.formType != nsPushSummary {
			continue
		}
		if cnt, err := strconv.Atoi(f.count); err == nil && cnt > 0 {
			p.Count = cnt
		}
		p.From, p.Body = f.sender, f.body
	}
	if e := n.Child(nsTigaseEncrypt, "encrypted"); e != nil {
		return payload.Payload{Type: payload.TypeMessage, Count: p.Count, TS: now}, routerEnc(e)
	}
	return p, ""
}

// summaryForm is the part of an urn:xmpp:push:summary form a push uses,
// read in one pass (as parseForm would: the last field of a name counts,
// its first value trimmed).
type summaryForm struct {
	formType, count, sender, body string
}

func (f *summaryForm) read(x *stanza.Element) {
	for _, n := range x.Children {
		fe, ok := n.(*stanza.Element)
		if !ok || fe.Name.Local != "field" || fe.Name.Space != nsData {
			continue
		}
		var dst *string
		switch fe.Get("var") {
		case "FORM_TYPE":
			dst = &f.formType
		case "message-count":
			dst = &f.count
		case "last-message-sender":
			dst = &f.sender
		case "last-message-body":
			dst = &f.body
		default:
			continue
		}
		*dst = firstValue(fe)
	}
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
