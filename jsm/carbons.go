package jsm

import "pushd/internal/stanza"

// nsHints is XEP-0334 (message processing hints).
const nsHints = "urn:xmpp:hints"

// carbonable says whether a message is copied to other devices (XEP-0280
// §6): chat, or normal with a body, not marked private or no-copy, and
// not itself a carbon.
func carbonable(st *stanza.Element) bool {
	switch st.Get("type") {
	case "chat":
	case "", "normal":
		if st.Child(stanza.NSClient, "body") == nil {
			return false
		}
	default:
		return false
	}
	for _, c := range st.Children {
		e, ok := c.(*stanza.Element)
		if !ok {
			continue
		}
		switch {
		case e.Is(stanza.NSCarbons, "private"), e.Is(nsHints, "no-copy"),
			e.Is(stanza.NSCarbons, "received"), e.Is(stanza.NSCarbons, "sent"):
			return false
		}
	}
	return true
}

// carbonSent copies a message d sent to the user's other carbons-enabled
// devices (XEP-0280 §7).
func (m *Machine) carbonSent(d *device, st *stanza.Element) {
	m.carbon(d.user, "sent", st, func(o *device) bool { return o == d })
}

// carbonReceived copies a message for the user to the carbons-enabled
// devices that did not get it already (XEP-0280 §6): not the full JID it
// was sent to (got) nor the devices it was delivered to by bare JID.
func (m *Machine) carbonReceived(u *user, st *stanza.Element, got *device, targets []*device) {
	m.carbon(u, "received", st, func(o *device) bool {
		if o == got {
			return true
		}
		for _, t := range targets {
			if t == o {
				return true
			}
		}
		return false
	})
}

func (m *Machine) carbon(u *user, dir string, st *stanza.Element, skip func(*device) bool) {
	var wrapped *stanza.Element // one <sent/>/<received/> shared by every copy
	for _, o := range u.devices {
		if !o.carbons || skip(o) {
			continue
		}
		if wrapped == nil {
			if !carbonable(st) {
				return
			}
			wrapped = stanza.New(stanza.NSCarbons, dir).Add(stanza.New(stanza.NSForward, "forwarded").Add(st))
		}
		c := stanza.New(stanza.NSClient, "message", "from", u.bareStr, "to", o.key)
		if t := st.Get("type"); t != "" {
			c.Set("type", t)
		}
		m.send(o, c.Add(wrapped))
	}
}
