package jsm

import (
	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
)

// Features the server advertises in disco#info (XEP-0030), sorted. Push
// (urn:xmpp:push:0) is a feature of the account, not of the server
// (XEP-0357 §4): see accountFeatures.
var serverFeatures = []string{
	stanza.NSDiscoInfo,
	stanza.NSDiscoItem,
	stanza.NSRoster,
	"msgoffline",
	stanza.NSCarbons,
	stanza.NSCSI,
	stanza.NSPing,
	stanza.NSSM,
}

// Features of a user's account (disco#info to the bare JID), sorted.
var accountFeatures = []string{
	nsEncrypt,
	"tigase:push:encrypt:aes-128-gcm",
	"tigase:push:encrypt:aes-256-gcm",
	stanza.NSPush,
}

// validIQ checks the shape RFC 6120 §8.2.3 requires: an id, a known type,
// and for get and set exactly one child element.
func validIQ(st *stanza.Element) bool {
	if st.Get("id") == "" {
		return false
	}
	switch st.Get("type") {
	case "get", "set":
		return len(st.Elements()) == 1
	case "result", "error":
		return true
	}
	return false
}

// iqOut handles an IQ from a client: no 'to' (or its own bare JID) is for
// the server acting for the account; anything else is routed.
func (m *Machine) iqOut(d *device, st *stanza.Element) {
	if !validIQ(st) {
		m.bounce(st, "modify", "bad-request")
		return
	}
	toStr := st.Get("to")
	if toStr == "" {
		m.selfIQ(d, st)
		return
	}
	to, err := jid.Parse(toStr)
	if err != nil {
		m.bounce(st, "modify", "jid-malformed")
		return
	}
	if to.Resourcepart() == "" && to.Localpart() == d.jid.Localpart() && to.Domainpart() == m.domain {
		m.selfIQ(d, st)
		return
	}
	m.route(st, d.jid)
}

// iqToUser handles an IQ for a local user (RFC 6121 §8.5.1, §8.5.3.1):
// a full JID reaches that device; a bare JID is answered by the server,
// which for another user's account offers nothing yet.
func (m *Machine) iqToUser(u *user, to jid.JID, st *stanza.Element, from jid.JID) {
	typ := st.Get("type")
	if res := to.Resourcepart(); res != "" {
		if d := u.device(res); d != nil && !(d.susp && (typ == "get" || typ == "set")) {
			m.send(d, st)
		} else if typ == "get" || typ == "set" {
			// No such device, or a suspended one, which the server
			// answers for (RFC 6120 §8.5.3.1, M2).
			m.bounce(st, "cancel", "service-unavailable")
		}
		return
	}
	if typ != "get" && typ != "set" {
		return // a result or error nobody waits for
	}
	if from.Localpart() == u.bare.Localpart() && from.Domainpart() == m.domain {
		if d := u.device(from.Resourcepart()); d != nil {
			m.selfIQ(d, st)
			return
		}
	}
	m.bounce(st, "cancel", "service-unavailable")
}

// selfIQ serves the user's own account: roster, carbons, ping, disco.
func (m *Machine) selfIQ(d *device, st *stanza.Element) {
	typ := st.Get("type")
	if typ != "get" && typ != "set" {
		return
	}
	q := st.FirstElement()
	switch {
	case q.Name.Space == stanza.NSRoster && q.Name.Local == "query":
		m.rosterIQ(d, st, q)
	case q.Name.Space == stanza.NSCarbons && (q.Name.Local == "enable" || q.Name.Local == "disable"):
		if typ != "set" {
			m.bounce(st, "modify", "bad-request")
			return
		}
		d.carbons = q.Name.Local == "enable" // XEP-0280 §4
		m.route(iqResult(st), d.user.bare)
	case q.Is(stanza.NSPing, "ping") && typ == "get":
		m.route(iqResult(st), d.user.bare)
	case q.Is(stanza.NSDiscoInfo, "query") && typ == "get":
		// RFC 6121 / XEP-0030 §8: the account itself, with XEP-0357 push
		// and its tigase encryption as Prosody's mod_cloud_notify(_encrypted)
		// advertise them.
		res := stanza.New(stanza.NSDiscoInfo, "query").Add(
			stanza.New(stanza.NSDiscoInfo, "identity", "category", "account", "type", "registered"))
		for _, f := range accountFeatures {
			res.Add(stanza.New(stanza.NSDiscoInfo, "feature", "var", f))
		}
		m.route(iqResult(st, res), d.user.bare)
	case q.Name.Space == stanza.NSPush && (q.Name.Local == "enable" || q.Name.Local == "disable"):
		m.pushIQ(d, st, q)
	default:
		m.bounce(st, "cancel", "service-unavailable")
	}
}

// serverIQ serves IQs to the server's own domain.
func (m *Machine) serverIQ(st *stanza.Element, to jid.JID) {
	typ := st.Get("type")
	if typ != "get" && typ != "set" {
		return
	}
	q := st.FirstElement()
	switch {
	case q.Is(stanza.NSPing, "ping") && typ == "get":
		m.route(iqResult(st), to)
	case q.Is(stanza.NSDiscoInfo, "query") && typ == "get" && q.Get("node") == "":
		res := stanza.New(stanza.NSDiscoInfo, "query")
		res.Add(stanza.New(stanza.NSDiscoInfo, "identity", "category", "server", "type", "im", "name", "pushd"))
		for _, f := range serverFeatures {
			res.Add(stanza.New(stanza.NSDiscoInfo, "feature", "var", f))
		}
		m.route(iqResult(st, res), to)
	case q.Is(stanza.NSDiscoItem, "query") && typ == "get" && q.Get("node") == "":
		res := stanza.New(stanza.NSDiscoItem, "query")
		for _, c := range sortedKeys(m.components) {
			res.Add(stanza.New(stanza.NSDiscoItem, "item", "jid", c))
		}
		m.route(iqResult(st, res), to)
	default:
		m.bounce(st, "cancel", "service-unavailable")
	}
}
