package jsm

import (
	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
)

// stepStanzaIn handles a stanza from a client. Stanzas without 'to' are
// the user's own business (presence broadcast, roster, carbons…); the rest
// are routed like any other.
func (m *Machine) stepStanzaIn(e StanzaIn) {
	d := m.streams[e.Stream]
	if d == nil || !e.Stanza.IsStanza() {
		return
	}
	st := e.Stanza
	if interacts(st) {
		d.lastActive = m.now
		d.user.lastDevice = d.key // M6 (a)
	}
	switch st.Name.Local {
	case "presence":
		m.presenceOut(d, st)
	case "iq":
		m.iqOut(d, st)
	case "message":
		m.messageOut(d, st)
	}
}

// stepComponentIn routes a stanza from a component. The router checked
// that 'from' is in the component's domain; a stanza without a usable
// 'from' cannot be answered and is dropped.
func (m *Machine) stepComponentIn(e ComponentIn) {
	st := e.Stanza
	if !st.IsStanza() {
		return
	}
	from, err := jid.Parse(st.Get("from"))
	if err != nil || from.Domainpart() != e.Domain {
		return
	}
	if st.Name.Local == "iq" && !validIQ(st) {
		m.bounce(st, "modify", "bad-request")
		return
	}
	if m.pushAnswer(st, from) {
		return // an app server answered a publish (M3)
	}
	if st.Get("to") == "" {
		m.bounce(st, "modify", "bad-request")
		return
	}
	m.route(st, from)
}

// stepForwarded routes a stanza another node of the cluster forwarded:
// its sender's sessions live there, its recipient's here.
func (m *Machine) stepForwarded(e Forwarded) {
	st := e.Stanza
	if !st.IsStanza() {
		return
	}
	from, err := jid.Parse(st.Get("from"))
	if err != nil || st.Get("to") == "" {
		return
	}
	if st.Name.Local == "iq" && !validIQ(st) {
		m.bounce(st, "modify", "bad-request")
		return
	}
	m.route(st, from)
}

// route delivers st by its 'to' (RFC 6120 §10): the local domain, a
// connected component, or nowhere. from is the sender, already trusted.
func (m *Machine) route(st *stanza.Element, from jid.JID) {
	to, err := jid.Parse(st.Get("to"))
	if err != nil {
		m.bounce(st, "modify", "jid-malformed")
		return
	}
	switch dom := to.Domainpart(); {
	case dom == m.domain:
		m.routeLocal(st, from, to)
	case m.isComponent(dom):
		m.emit(ToComponent{Domain: dom, Stanza: st})
	default:
		// No s2s: every other domain is unreachable (RFC 6120 §10.4.3).
		m.bounce(st, "cancel", "remote-server-not-found")
	}
}

// remote reports whether a user of the domain is served by another node.
// A contact of another domain is nobody's here (there is no s2s).
func (m *Machine) remote(to jid.JID) bool {
	return m.cfg.Remote != nil && to.Localpart() != "" && to.Domainpart() == m.domain && m.cfg.Remote(to.Bare().String())
}

// routeLocal handles a stanza for the server itself or one of its users.
func (m *Machine) routeLocal(st *stanza.Element, from, to jid.JID) {
	if to.Localpart() == "" {
		switch st.Name.Local {
		case "iq":
			m.serverIQ(st, to)
		case "message":
			// The server offers no message service (RFC 6120 §10.3).
			m.bounce(st, "cancel", "service-unavailable")
		}
		return // presence to the server: nothing to do with it
	}
	if m.remote(to) {
		m.emit(Forward{Stanza: st})
		return
	}
	u := m.users[to.Localpart()]
	if u == nil {
		// RFC 6121 §8.1: no such account. Presence is dropped so that its
		// existence is not revealed; the others get service-unavailable.
		if st.Name.Local != "presence" {
			m.bounce(st, "cancel", "service-unavailable")
		}
		return
	}
	switch st.Name.Local {
	case "message":
		m.messageToUser(u, to, st)
	case "presence":
		m.presenceToUser(u, to, st, from)
	case "iq":
		m.iqToUser(u, to, st, from)
	}
}

// messageOut handles a client's message: routed, then copied to the
// sender's other devices (XEP-0280 sent carbons).
func (m *Machine) messageOut(d *device, st *stanza.Element) {
	to := d.user.bare
	if s := st.Get("to"); s != "" {
		var err error
		if to, err = jid.Parse(s); err != nil {
			m.bounce(st, "modify", "jid-malformed")
			return
		}
	} else {
		// RFC 6120 §8.1.1.1: no 'to' means the user's own bare JID.
		st = withAttrs(st, "to", d.user.bareStr)
	}
	if to.Domainpart() == m.domain && to.Localpart() != "" {
		switch u := m.users[to.Localpart()]; {
		case m.remote(to):
			m.emit(Forward{Stanza: st})
		case u != nil:
			m.messageToUser(u, to, st)
		default:
			m.bounce(st, "cancel", "service-unavailable")
		}
	} else {
		m.route(st, d.jid)
	}
	if d.user.bare.Equal(to.Bare()) {
		return // a note to self is not a conversation to mirror
	}
	m.carbonSent(d, st)
}

// messageToUser delivers a message to a local user (RFC 6121 §8.5).
func (m *Machine) messageToUser(u *user, to jid.JID, st *stanza.Element) {
	typ := st.Get("type")
	if res := to.Resourcepart(); res != "" {
		if d := u.device(res); d != nil {
			m.send(d, st)
			m.carbonReceived(u, st, d, nil)
			return
		}
		// §8.5.3.2.1: no such resource.
		switch typ {
		case "groupchat":
			m.bounce(st, "cancel", "service-unavailable")
			return
		case "headline", "error":
			return
		}
		// normal and chat: as if sent to the bare JID.
	}
	switch typ {
	case "error":
		return // §8.5.2.1.1: never bounce or store an error
	case "groupchat":
		m.bounce(st, "cancel", "service-unavailable")
		return
	case "headline":
		for _, d := range u.devices {
			if d.available && d.priority >= 0 {
				m.send(d, st)
			}
		}
		return
	}
	// normal, chat: the available devices of highest non-negative
	// priority; carbons reach the other interested ones.
	targets := m.buf[:0]
	best := 0
	for _, d := range u.devices {
		switch {
		case !d.available || d.priority < 0:
		case len(targets) == 0 || d.priority > best:
			targets, best = append(targets[:0], d), d.priority
		case d.priority == best:
			targets = append(targets, d)
		}
	}
	m.buf = targets
	if len(targets) == 0 {
		if m.toOffline(u, st) {
			m.triggerOffline(u, st) // devices gone with a registration (M8, M10)
		}
		return
	}
	for _, d := range targets {
		m.send(d, st)
	}
	m.carbonReceived(u, st, nil, targets)
	clear(m.buf)
}

// toOffline keeps a message for a user with no device to take it
// (XEP-0160), bounded by MaxOffline. Only chat and normal messages with a
// body are worth keeping; anything else (chat states, receipts) is
// dropped, as ejabberd and Prosody do.
func (m *Machine) toOffline(u *user, st *stanza.Element) bool {
	if st.Name.Local != "message" || !isStorable(st) {
		return false
	}
	if u.offline >= m.cfg.MaxOffline {
		// M9: never dropped silently.
		m.bounce(st, "wait", "resource-constraint")
		return false
	}
	u.offline++
	c := st.Copy()
	if c.Child(stanza.NSDelay, "delay") == nil {
		c.Add(stanza.New(stanza.NSDelay, "delay", "from", m.domain, "stamp", stamp(m.now)))
	}
	m.emit(StoreOffline{User: u.bare, Message: c})
	return true
}

func isStorable(st *stanza.Element) bool {
	switch st.Get("type") {
	case "", "normal", "chat":
		return st.Child(stanza.NSClient, "body") != nil
	}
	return false
}

// flushOffline asks for the user's offline messages for d, once at a time.
func (m *Machine) flushOffline(d *device) {
	u := d.user
	if u.flushing || (u.offline == 0 && !u.offlineUnknown) {
		return
	}
	u.flushing = true
	m.emit(FlushOffline{Stream: d.stream, User: u.bare})
}

// stepOfflineLoaded delivers the stored messages to the device that asked,
// or, if it has gone meanwhile, routes them to the user again (which
// stores them again if no device is left).
func (m *Machine) stepOfflineLoaded(e OfflineLoaded) {
	d := m.streams[e.Stream]
	var u *user
	if d != nil {
		u = d.user
	} else if len(e.Messages) > 0 {
		to, err := jid.Parse(e.Messages[0].Get("to"))
		if err != nil {
			return
		}
		u = m.user(to)
	}
	if u == nil {
		return
	}
	u.flushing, u.offlineUnknown = false, false
	u.offline = max(0, u.offline-len(e.Messages))
	for _, st := range e.Messages {
		if d != nil {
			m.send(d, st)
		} else {
			m.messageToUser(u, u.bare, st)
		}
	}
}

// bounce answers st with a stanza error (RFC 6120 §8.3): from and to
// swapped, same id. Errors are never answered with errors, so bounces
// cannot loop.
func (m *Machine) bounce(st *stanza.Element, typ, cond string) {
	if st.Get("type") == "error" || st.Get("from") == "" {
		return
	}
	e := stanza.New(stanza.NSClient, st.Name.Local, "type", "error")
	if id := st.Get("id"); id != "" {
		e.Set("id", id)
	}
	from := st.Get("to")
	if from == "" {
		// RFC 6120 §8.1.2.1: an answer to a stanza without 'to' comes from
		// the user's own bare JID.
		from = m.domain
		if s, err := jid.Parse(st.Get("from")); err == nil && s.Domainpart() == m.domain && s.Localpart() != "" {
			from = s.Bare().String()
		}
	}
	e.Set("from", from)
	e.Set("to", st.Get("from"))
	e.Add(stanza.New(stanza.NSClient, "error", "type", typ).Add(stanza.New(stanza.NSStanzaErr, cond)))
	sender, err := jid.Parse(from)
	if err != nil {
		sender = jid.MustParse(m.domain) // 'to' was malformed: the server answers
		e.Set("from", m.domain)
	}
	m.route(e, sender)
}

// iqResult is the result to an IQ, addressed back to its sender.
func iqResult(st *stanza.Element, payload ...stanza.Node) *stanza.Element {
	r := stanza.New(stanza.NSClient, "iq", "type", "result", "id", st.Get("id"))
	if to := st.Get("to"); to != "" {
		r.Set("from", to)
	}
	r.Set("to", st.Get("from"))
	return r.Add(payload...)
}
