package jsm

import (
	"strconv"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
)

// presenceOut handles presence from a client (RFC 6121 §4): broadcast when
// it has no 'to', directed presence or a subscription request when it has.
func (m *Machine) presenceOut(d *device, st *stanza.Element) {
	typ := st.Get("type")
	toStr := st.Get("to")
	if toStr == "" {
		switch typ {
		case "":
			m.available(d, st)
		case "unavailable":
			m.unavailable(d, st)
		}
		return // other types need a 'to' (RFC 6121 §4.2.1); ignored
	}
	to, err := jid.Parse(toStr)
	if err != nil {
		m.bounce(st, "modify", "jid-malformed")
		return
	}
	switch typ {
	case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
		m.subscriptionOut(d.user, to.Bare(), typ, st)
		return
	case "", "unavailable":
		// Directed presence (§4.6): remember who saw us, so that they also
		// see us leave, unless a subscription covers them already.
		bare := to.Bare().String()
		if it := d.user.roster[bare]; it == nil || !hasFrom(it.Subscription) {
			if typ == "" {
				if d.directed == nil {
					d.directed = make(map[string]bool)
				}
				d.directed[toStr] = true
			} else {
				delete(d.directed, toStr)
			}
		}
	}
	m.route(st, d.jid)
}

// available handles initial presence and presence updates (RFC 6121
// §4.2, §4.4).
func (m *Machine) available(d *device, st *stanza.Element) {
	initial := !d.available
	d.available = true
	d.lastPresence = st
	d.show = st.ChildText(stanza.NSClient, "show")
	d.status = st.ChildText(stanza.NSClient, "status")
	d.priority = 0
	if p, err := strconv.Atoi(st.ChildText(stanza.NSClient, "priority")); err == nil && p >= -128 && p <= 127 {
		d.priority = p
	}
	if c := st.Child(stanza.NSCaps, "c"); c != nil {
		d.kind = m.kindOf(d.jid.Resourcepart(), c.Get("node"))
	}
	u := d.user
	m.updateAway(u, d) // a device back (or a suspended one's update): M4
	m.broadcast(d, st, true)
	if initial {
		// The new device learns of the user's other devices too, as
		// Prosody and ejabberd do.
		for _, o := range u.devices {
			if o != d && o.available {
				m.send(d, o.lastPresence)
			}
		}
		m.probeContacts(d)
		// §3.1.3: requests the user has not answered are shown again.
		for _, k := range u.order {
			if it := u.roster[k]; it.Pending {
				m.send(d, stanza.New(stanza.NSClient, "presence", "type", "subscribe", "from", k, "to", u.bareStr))
			}
		}
	}
	if d.priority >= 0 {
		m.flushOffline(d)
	}
}

// unavailable ends the device's presence: explicit unavailable presence
// (st), or a device that closed or expired (st nil, a synthetic one is
// sent). Directed-presence recipients are told too (§4.6.3).
func (m *Machine) unavailable(d *device, st *stanza.Element) {
	if !d.available && len(d.directed) == 0 {
		return
	}
	if st == nil {
		st = stanza.New(stanza.NSClient, "presence", "type", "unavailable", "from", d.key)
	}
	if d.available {
		m.broadcast(d, st, false)
	}
	for _, to := range sortedKeys(d.directed) {
		m.route(withAttrs(st, "to", to), d.jid)
	}
	d.available, d.lastPresence, d.directed = false, nil, nil
	d.show, d.status, d.priority = "", "", 0
	d.awayFor, d.awayPres = nil, nil
	m.updateAway(d.user, nil)
}

// broadcast sends d's presence to the contacts subscribed to the user and
// to the user's own available devices (§4.2.2, §4.4.2). self says whether
// d itself gets a copy (it does for available presence).
func (m *Machine) broadcast(d *device, st *stanza.Element, self bool) {
	u := d.user
	m.toContacts(d, m.shown(d, st))
	for _, o := range u.devices {
		if o.available && (self || o != d) {
			m.send(o, st)
		}
	}
}

// probeContacts gets d the current presence of the contacts the user is
// subscribed to (§4.3). Local contacts are answered from jsm's own state;
// components get a real probe.
func (m *Machine) probeContacts(d *device) {
	u := d.user
	for _, k := range u.order {
		it := u.roster[k]
		if !hasTo(it.Subscription) {
			continue
		}
		if m.remote(it.JID) {
			m.route(stanza.New(stanza.NSClient, "presence", "type", "probe", "from", u.bareStr, "to", k), u.bare)
		} else if c := m.user(it.JID); c != nil {
			if ci := c.roster[u.bareStr]; ci == nil || !hasFrom(ci.Subscription) {
				continue
			}
			for _, cd := range c.devices {
				if cd.available {
					m.send(d, withAttrs(m.shown(cd, cd.lastPresence), "to", u.bareStr))
				}
			}
		} else if m.isComponent(it.JID.Domainpart()) {
			m.emit(ToComponent{Domain: it.JID.Domainpart(), Stanza: stanza.New(stanza.NSClient, "presence",
				"type", "probe", "from", u.bareStr, "to", k)})
		}
	}
}

// presenceToUser delivers presence addressed to a local user (§4.3,
// §8.5.2.1.2, §8.5.3).
func (m *Machine) presenceToUser(u *user, to jid.JID, st *stanza.Element, from jid.JID) {
	typ := st.Get("type")
	switch typ {
	case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
		m.subscriptionIn(u, from.Bare(), typ, st)
		return
	case "probe":
		m.answerProbe(u, st, from)
		return
	}
	if res := to.Resourcepart(); res != "" {
		if d := u.device(res); d != nil {
			m.send(d, st)
		}
		return // §8.5.3.2.3: no such resource, silently ignored
	}
	for _, d := range u.devices {
		if d.available {
			m.send(d, st)
		}
	}
}

// answerProbe tells a subscribed prober the user's presence on each
// available device, or that the user is unavailable (§4.3.2).
func (m *Machine) answerProbe(u *user, st *stanza.Element, from jid.JID) {
	it := u.roster[from.Bare().String()]
	if it == nil || !hasFrom(it.Subscription) {
		return // §4.3.2.1: not subscribed, so nothing to tell
	}
	to := st.Get("from")
	sent := false
	for _, d := range u.devices {
		if d.available {
			m.route(withAttrs(m.shown(d, d.lastPresence), "to", to), d.jid)
			sent = true
		}
	}
	if !sent {
		m.route(stanza.New(stanza.NSClient, "presence", "type", "unavailable", "from", u.bareStr, "to", to), u.bare)
	}
}

// sendPresenceTo sends the user's current presence from every available
// device to one contact: after the user approves a subscription (§3.1.5),
// or unavailable after it is cancelled (§3.2.3, §3.3.3).
func (m *Machine) sendPresenceTo(u *user, contact string, unavail bool) {
	for _, d := range u.devices {
		if !d.available {
			continue
		}
		p := withAttrs(m.shown(d, d.lastPresence), "to", contact)
		if unavail {
			p = stanza.New(stanza.NSClient, "presence", "type", "unavailable", "from", d.key, "to", contact)
		}
		m.route(p, d.jid)
	}
}

func hasFrom(s Subscription) bool { return s == SubFrom || s == SubBoth }
func hasTo(s Subscription) bool   { return s == SubTo || s == SubBoth }
