package jsm

import (
	"maps"
	"slices"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
)

// setItem stores it (JID already bare) in the user's roster.
func (u *user) setItem(it RosterItem) *RosterItem {
	k := it.JID.String()
	if p := u.roster[k]; p != nil {
		*p = it
		return p
	}
	p := &it
	u.roster[k] = p
	i, _ := slices.BinarySearch(u.order, k)
	u.order = slices.Insert(u.order, i, k)
	return p
}

func (u *user) deleteItem(k string) {
	delete(u.roster, k)
	if i, ok := slices.BinarySearch(u.order, k); ok {
		u.order = slices.Delete(u.order, i, i+1)
	}
}

// visible says whether an item belongs in the roster the client sees. An
// item that exists only to remember an unanswered inbound request ("None +
// Pending In") is kept out, as RFC 6121 §3.1.3 asks.
func visible(it *RosterItem) bool {
	return !(it.Pending && it.Subscription == SubNone && !it.Ask && it.Name == "" && len(it.Groups) == 0)
}

// rosterIQ serves jabber:iq:roster get and set from the user's own device
// (RFC 6121 §2.1.3, §2.3, §2.5).
func (m *Machine) rosterIQ(d *device, st, q *stanza.Element) {
	u := d.user
	if st.Get("type") == "get" {
		d.rosterRequested = true
		res := stanza.New(stanza.NSRoster, "query")
		for _, k := range u.order {
			if it := u.roster[k]; visible(it) {
				res.Add(itemElement(it, false))
			}
		}
		m.route(iqResult(st, res), u.bare)
		return
	}
	// §2.1.5: a set carries exactly one item.
	items := q.Elements()
	if len(items) != 1 || !items[0].Is(stanza.NSRoster, "item") {
		m.bounce(st, "modify", "bad-request")
		return
	}
	el := items[0]
	cj, err := jid.Parse(el.Get("jid"))
	if err != nil {
		m.bounce(st, "modify", "jid-malformed")
		return
	}
	cj = cj.Bare()
	k := cj.String()
	if el.Get("subscription") == "remove" {
		it := u.roster[k]
		if it == nil {
			m.bounce(st, "cancel", "item-not-found")
			return
		}
		m.route(iqResult(st), u.bare)
		m.removeItem(u, it)
		return
	}
	// Clients may set name and groups only; subscription and ask are the
	// server's (§2.1.2.5).
	it := RosterItem{JID: cj, Subscription: SubNone, Name: el.Get("name")}
	if old := u.roster[k]; old != nil {
		it.Subscription, it.Ask, it.Pending = old.Subscription, old.Ask, old.Pending
	}
	seen := map[string]bool{}
	for _, g := range el.Elements() {
		if g.Is(stanza.NSRoster, "group") {
			name := g.Text()
			if name == "" || seen[name] {
				m.bounce(st, "modify", "bad-request") // §2.3.3: empty or duplicate group
				return
			}
			seen[name] = true
			it.Groups = append(it.Groups, name)
		}
	}
	m.route(iqResult(st), u.bare)
	m.saveItem(u, it)
}

// removeItem deletes a contact and cancels both directions of the
// subscription with it (§2.5.2).
func (m *Machine) removeItem(u *user, it *RosterItem) {
	contact := it.JID
	k := contact.String()
	if hasTo(it.Subscription) || it.Ask {
		m.route(stanza.New(stanza.NSClient, "presence", "type", "unsubscribe", "from", u.bareStr, "to", k), u.bare)
	}
	if hasFrom(it.Subscription) || it.Pending {
		m.sendPresenceTo(u, k, true)
		m.route(stanza.New(stanza.NSClient, "presence", "type", "unsubscribed", "from", u.bareStr, "to", k), u.bare)
	}
	u.deleteItem(k)
	m.pushItem(u, &RosterItem{JID: contact}, true)
	m.emit(DeleteRosterItem{User: u.bare, Contact: contact})
}

// saveItem stores, persists and pushes one item.
func (m *Machine) saveItem(u *user, it RosterItem) {
	p := u.setItem(it)
	m.emit(SaveRosterItem{User: u.bare, Item: cloneItem(*p)})
	if visible(p) {
		m.pushItem(u, p, false)
	}
}

// pushItem sends a roster push to every device that asked for the roster
// (§2.1.6). A detached one gets it queued like anything else.
func (m *Machine) pushItem(u *user, it *RosterItem, remove bool) {
	var q *stanza.Element
	for _, d := range u.devices {
		if !d.rosterRequested {
			continue
		}
		if q == nil {
			q = stanza.New(stanza.NSRoster, "query").Add(itemElement(it, remove))
		}
		m.send(d, stanza.New(stanza.NSClient, "iq", "type", "set", "id", m.nextID("push"), "to", d.key).Add(q))
	}
}

func itemElement(it *RosterItem, remove bool) *stanza.Element {
	e := stanza.New(stanza.NSRoster, "item", "jid", it.JID.String())
	if remove {
		e.Set("subscription", "remove")
		return e
	}
	e.Set("name", it.Name)
	e.Set("subscription", string(it.Subscription))
	if it.Ask {
		e.Set("ask", "subscribe")
	}
	for _, g := range it.Groups {
		e.Add(stanza.New(stanza.NSRoster, "group").AddText(g))
	}
	return e
}

func cloneItem(it RosterItem) RosterItem {
	it.Groups = slices.Clone(it.Groups)
	return it
}

// subscriptionOut handles a subscription stanza the user sends to contact
// (RFC 6121 §3: the "user's server" side of each handshake step). It
// updates the user's roster, then routes the stanza stamped with bare JIDs.
func (m *Machine) subscriptionOut(u *user, contact jid.JID, typ string, st *stanza.Element) {
	k := contact.String()
	old := u.roster[k]
	it := RosterItem{JID: contact, Subscription: SubNone}
	if old != nil {
		it = cloneItem(*old)
	}
	out := withAttrs(st, "from", u.bareStr, "to", k)
	switch typ {
	case "subscribe": // §3.1.2
		if hasTo(it.Subscription) {
			break // already subscribed: route only (the contact re-confirms)
		}
		it.Ask = true
	case "subscribed": // §3.1.5: approve
		if !it.Pending {
			return // nothing to approve (pre-approval is not supported)
		}
		it.Pending = false
		it.Subscription = addFrom(it.Subscription)
		m.saveItem(u, it)
		m.route(out, u.bare)
		m.sendPresenceTo(u, k, false)
		return
	case "unsubscribe": // §3.3.2
		it.Ask = false
		it.Subscription = dropTo(it.Subscription)
	case "unsubscribed": // §3.2.2: cancel or deny
		wasFrom := hasFrom(it.Subscription)
		it.Pending = false
		it.Subscription = dropFrom(it.Subscription)
		if old != nil && (old.Pending != it.Pending || old.Subscription != it.Subscription) {
			m.commit(u, old, it)
		}
		if wasFrom {
			m.sendPresenceTo(u, k, true)
		}
		m.route(out, u.bare)
		return
	}
	changed := old != nil && (old.Ask != it.Ask || old.Subscription != it.Subscription)
	if changed || (old == nil && typ == "subscribe") {
		m.commit(u, old, it)
	}
	m.route(out, u.bare)
}

// commit saves a changed item, or forgets one that no longer means
// anything (a hidden pending-only item whose request was answered).
func (m *Machine) commit(u *user, old *RosterItem, it RosterItem) {
	if old != nil && !visible(old) && it.Subscription == SubNone && !it.Ask && !it.Pending {
		u.deleteItem(it.JID.String())
		m.emit(DeleteRosterItem{User: u.bare, Contact: it.JID})
		return
	}
	m.saveItem(u, it)
}

// subscriptionIn handles a subscription stanza from contact to the user
// (the "contact's server" side of RFC 6121 §3).
func (m *Machine) subscriptionIn(u *user, from jid.JID, typ string, st *stanza.Element) {
	k := from.String()
	old := u.roster[k]
	it := RosterItem{JID: from, Subscription: SubNone}
	if old != nil {
		it = cloneItem(*old)
	}
	in := withAttrs(st, "from", k, "to", u.bareStr)
	switch typ {
	case "subscribe": // §3.1.3
		if hasFrom(it.Subscription) {
			// Already approved: answer for the user, who need not see it.
			m.route(stanza.New(stanza.NSClient, "presence", "type", "subscribed", "from", u.bareStr, "to", k), u.bare)
			return
		}
		if !it.Pending {
			it.Pending = true
			m.commit(u, old, it)
		}
		m.toAvailable(u, in) // shown again at login if nobody is here
	case "subscribed": // §3.1.6
		if !it.Ask || old == nil {
			return // not asked for: ignored
		}
		it.Ask = false
		it.Subscription = addTo(it.Subscription)
		m.commit(u, old, it)
		m.toAvailable(u, in)
	case "unsubscribe": // §3.3.3
		if !hasFrom(it.Subscription) && !it.Pending {
			return
		}
		wasFrom := hasFrom(it.Subscription)
		it.Pending = false
		it.Subscription = dropFrom(it.Subscription)
		m.commit(u, old, it)
		if wasFrom {
			m.sendPresenceTo(u, k, true)
		}
		m.toAvailable(u, in)
	case "unsubscribed": // §3.2.3
		if !hasTo(it.Subscription) && !it.Ask {
			return
		}
		it.Ask = false
		it.Subscription = dropTo(it.Subscription)
		m.commit(u, old, it)
		// The contact's server sent unavailable presence before this.
		m.toAvailable(u, in)
	}
}

// toAvailable sends st to every available device of the user.
func (m *Machine) toAvailable(u *user, st *stanza.Element) {
	for _, d := range u.devices {
		if d.available {
			m.send(d, st)
		}
	}
}

func addFrom(s Subscription) Subscription {
	if hasTo(s) {
		return SubBoth
	}
	return SubFrom
}

func addTo(s Subscription) Subscription {
	if hasFrom(s) {
		return SubBoth
	}
	return SubTo
}

func dropFrom(s Subscription) Subscription {
	if hasTo(s) {
		return SubTo
	}
	return SubNone
}

func dropTo(s Subscription) Subscription {
	if hasFrom(s) {
		return SubFrom
	}
	return SubNone
}

func sortedKeys(set map[string]bool) []string {
	return slices.Sorted(maps.Keys(set))
}
