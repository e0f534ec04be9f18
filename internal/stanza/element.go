// Package stanza is pushd's in-memory form of XMPP stanzas and the bounded
// reader and writer that move them on and off a stream.
//
// It owns XML framing only: it knows nothing of routing, sessions or
// storage. Every byte a peer sends passes through Reader, so the limits of
// BEHAVIOUR S4 (size, depth, no DTDs, entities or processing instructions)
// are enforced here, once.
package stanza

import (
	"encoding/xml"
	"strings"
)

// Namespaces used across pushd.
const (
	NSClient    = "jabber:client"
	NSServer    = "jabber:server"
	NSComponent = "jabber:component:accept"
	NSStream    = "http://etherx.jabber.org/streams"
	NSStreamErr = "urn:ietf:params:xml:ns:xmpp-streams"
	NSStanzaErr = "urn:ietf:params:xml:ns:xmpp-stanzas"
	NSTLS       = "urn:ietf:params:xml:ns:xmpp-tls"
	NSSASL      = "urn:ietf:params:xml:ns:xmpp-sasl"
	NSBind      = "urn:ietf:params:xml:ns:xmpp-bind"
	NSSession   = "urn:ietf:params:xml:ns:xmpp-session"
	NSSM        = "urn:xmpp:sm:3"
	NSCSI       = "urn:xmpp:csi:0"
	NSPing      = "urn:xmpp:ping"
	NSRoster    = "jabber:iq:roster"
	NSDiscoInfo = "http://jabber.org/protocol/disco#info"
	NSDiscoItem = "http://jabber.org/protocol/disco#items"
	NSCarbons   = "urn:xmpp:carbons:2"
	NSForward   = "urn:xmpp:forward:0"
	NSDelay     = "urn:xmpp:delay"
	NSPush      = "urn:xmpp:push:0"
	NSCaps      = "http://jabber.org/protocol/caps"
	NSXML       = "http://www.w3.org/XML/1998/namespace"
)

// Node is a child of an Element: either *Element or Text.
type Node interface {
	node()
}

// Text is character data inside an element, unescaped.
type Text string

func (Text) node()     {}
func (*Element) node() {}

// Element is one XML element with its attributes and children in document
// order. Name.Space is the resolved namespace; the stanza namespaces of the
// three stream kinds (client, server, component) are all read as NSClient so
// that a stanza can move between streams unchanged.
type Element struct {
	Name     xml.Name
	Attr     []xml.Attr
	Children []Node
}

// New returns an element in namespace ns with the given attribute pairs
// (name, value, name, value, …).
func New(ns, local string, attrs ...string) *Element {
	e := &Element{Name: xml.Name{Space: ns, Local: local}}
	for i := 0; i+1 < len(attrs); i += 2 {
		e.Attr = append(e.Attr, xml.Attr{Name: xml.Name{Local: attrs[i]}, Value: attrs[i+1]})
	}
	return e
}

// Get returns the value of the un-namespaced attribute local, or "".
func (e *Element) Get(local string) string {
	for _, a := range e.Attr {
		if a.Name.Local == local && a.Name.Space == "" {
			return a.Value
		}
	}
	return ""
}

// Set sets (or, with an empty value, removes) the un-namespaced attribute local.
func (e *Element) Set(local, value string) {
	for i, a := range e.Attr {
		if a.Name.Local == local && a.Name.Space == "" {
			if value == "" {
				e.Attr = append(e.Attr[:i], e.Attr[i+1:]...)
			} else {
				e.Attr[i].Value = value
			}
			return
		}
	}
	if value != "" {
		e.Attr = append(e.Attr, xml.Attr{Name: xml.Name{Local: local}, Value: value})
	}
}

// Add appends children and returns e, so that trees can be built inline.
func (e *Element) Add(children ...Node) *Element {
	e.Children = append(e.Children, children...)
	return e
}

// AddText appends character data and returns e.
func (e *Element) AddText(s string) *Element {
	if s != "" {
		e.Children = append(e.Children, Text(s))
	}
	return e
}

// Child returns the first child element with the given namespace and local
// name; an empty ns matches any namespace.
func (e *Element) Child(ns, local string) *Element {
	for _, n := range e.Children {
		if c, ok := n.(*Element); ok && c.Name.Local == local && (ns == "" || c.Name.Space == ns) {
			return c
		}
	}
	return nil
}

// Elements returns the child elements, skipping text.
func (e *Element) Elements() []*Element {
	var out []*Element
	for _, n := range e.Children {
		if c, ok := n.(*Element); ok {
			out = append(out, c)
		}
	}
	return out
}

// FirstElement returns the first child element, or nil.
func (e *Element) FirstElement() *Element {
	for _, n := range e.Children {
		if c, ok := n.(*Element); ok {
			return c
		}
	}
	return nil
}

// Text returns the concatenated character data directly inside e.
func (e *Element) Text() string {
	var b strings.Builder
	for _, n := range e.Children {
		if t, ok := n.(Text); ok {
			b.WriteString(string(t))
		}
	}
	return b.String()
}

// ChildText returns the text of the first child named ns/local, or "".
func (e *Element) ChildText(ns, local string) string {
	if c := e.Child(ns, local); c != nil {
		return c.Text()
	}
	return ""
}

// Copy returns a deep copy of e, so one stanza can be changed per recipient.
func (e *Element) Copy() *Element {
	c := &Element{Name: e.Name}
	if len(e.Attr) > 0 {
		c.Attr = append([]xml.Attr(nil), e.Attr...)
	}
	if len(e.Children) > 0 {
		c.Children = make([]Node, len(e.Children))
		for i, n := range e.Children {
			if ce, ok := n.(*Element); ok {
				c.Children[i] = ce.Copy()
			} else {
				c.Children[i] = n
			}
		}
	}
	return c
}

// Is reports whether e is named ns/local.
func (e *Element) Is(ns, local string) bool {
	return e != nil && e.Name.Space == ns && e.Name.Local == local
}

// IsStanza reports whether e is a message, presence or iq.
func (e *Element) IsStanza() bool {
	if e == nil || e.Name.Space != NSClient {
		return false
	}
	switch e.Name.Local {
	case "message", "presence", "iq":
		return true
	}
	return false
}

// String serialises e with its own namespace declared; for logs of
// non-personal stanzas and for tests.
func (e *Element) String() string {
	var b strings.Builder
	w := &Writer{w: &b}
	w.element(e, "")
	return b.String()
}
