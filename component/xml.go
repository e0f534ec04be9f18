package component

import (
	"encoding/xml"
	"errors"
	"io"
	"strings"

	"mellium.im/xmlstream"

	"pushd/internal/stanza"
)

// Namespaces the component speaks.
const (
	nsCommands       = "http://jabber.org/protocol/commands"
	nsData           = "jabber:x:data"
	nsPubsub         = "http://jabber.org/protocol/pubsub"
	nsPublishOptions = "http://jabber.org/protocol/pubsub#publish-options"
	nsPushSummary    = "urn:xmpp:push:summary"
	nsTigaseEncrypt  = "tigase:push:encrypt:0"
	nsComponent      = "jabber:component:accept"
)

// Limits on what the component reads from the router (BEHAVIOUR S4): the
// router is trusted more than a client, but a foreign router forwards what
// clients send, so a command form is bounded like any stanza.
const (
	maxStanzaTokens = 4096
	maxStanzaDepth  = 16
	maxStanzaBytes  = 64 << 10
)

var errTooBig = errors.New("component: stanza over the size or depth limit")

// readElement builds the element that starts with start from the tokens
// of r (the inner tokens and the matching end element). Stanza namespaces
// of the component stream are read as stanza.NSClient, as the router does.
func readElement(r xml.TokenReader, start xml.StartElement) (*stanza.Element, error) {
	root := fromStart(start, "")
	if root.Name.Space == nsComponent || root.Name.Space == "" {
		root.Name.Space = stanza.NSClient
	}
	stack := []*stanza.Element{root}
	tokens, size := 0, 0
	for len(stack) > 0 {
		tok, err := r.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if len(stack) == 1 {
					return root, nil // reader ended at the end element
				}
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		tokens++
		if tokens > maxStanzaTokens {
			return nil, errTooBig
		}
		top := stack[len(stack)-1]
		switch t := tok.(type) {
		case xml.StartElement:
			if len(stack) >= maxStanzaDepth {
				return nil, errTooBig
			}
			c := fromStart(t, top.Name.Space)
			size += len(c.Name.Local)
			top.Add(c)
			stack = append(stack, c)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			size += len(t)
			top.AddText(string(t))
		}
		if size > maxStanzaBytes {
			return nil, errTooBig
		}
	}
	return root, nil
}

func fromStart(t xml.StartElement, parentNS string) *stanza.Element {
	e := &stanza.Element{Name: t.Name}
	if e.Name.Space == "" {
		e.Name.Space = parentNS
	}
	for _, a := range t.Attr {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		e.Attr = append(e.Attr, a)
	}
	return e
}

// writeElement encodes e as tokens. The top-level stanza is written without
// a namespace (the session writes the stream's), children declare theirs
// only where it changes.
func writeElement(w xmlstream.TokenWriter, e *stanza.Element) error {
	return writeTokens(w, e, stanza.NSClient, true)
}

func writeTokens(w xmlstream.TokenWriter, e *stanza.Element, parentNS string, top bool) error {
	name := xml.Name{Local: e.Name.Local}
	if !top && e.Name.Space != parentNS {
		name.Space = e.Name.Space
	}
	if err := w.EncodeToken(xml.StartElement{Name: name, Attr: e.Attr}); err != nil {
		return err
	}
	for _, n := range e.Children {
		switch c := n.(type) {
		case *stanza.Element:
			if err := writeTokens(w, c, e.Name.Space, false); err != nil {
				return err
			}
		case stanza.Text:
			if err := w.EncodeToken(xml.CharData(c)); err != nil {
				return err
			}
		}
	}
	return w.EncodeToken(xml.EndElement{Name: name})
}

// form is a parsed XEP-0004 data form: field var → values.
type form struct {
	typ    string
	fields map[string][]string
}

func (f form) get(name string) string {
	if v := f.fields[name]; len(v) > 0 {
		return strings.TrimSpace(v[0])
	}
	return ""
}

func (f form) has(name string) bool { _, ok := f.fields[name]; return ok }

// formValue is parseForm(x).get(name) without building the form: the
// publish path reads a handful of fields of every publish. As in
// parseForm, the last field of that name counts.
func formValue(x *stanza.Element, name string) string {
	if x == nil {
		return ""
	}
	var val string
	for _, n := range x.Children {
		fe, ok := n.(*stanza.Element)
		if !ok || fe.Name.Local != "field" || fe.Name.Space != nsData || fe.Get("var") != name {
			continue
		}
		val = firstValue(fe)
	}
	return val
}

// firstValue is the first <value/> of a form field, trimmed ("" if none).
func firstValue(field *stanza.Element) string {
	for _, vn := range field.Children {
		if ve, ok := vn.(*stanza.Element); ok && ve.Name.Local == "value" {
			return strings.TrimSpace(ve.Text())
		}
	}
	return ""
}

// parseForm reads a jabber:x:data element (nil → empty form).
func parseForm(x *stanza.Element) form {
	f := form{fields: map[string][]string{}}
	if x == nil {
		return f
	}
	f.typ = x.Get("type")
	for _, fe := range x.Elements() {
		if fe.Name.Local != "field" || fe.Name.Space != nsData {
			continue
		}
		v := fe.Get("var")
		if v == "" {
			continue
		}
		vals := []string{}
		for _, ve := range fe.Elements() {
			if ve.Name.Local == "value" {
				vals = append(vals, ve.Text())
			}
		}
		f.fields[v] = vals
	}
	return f
}

// formField describes a field of a form the component sends.
type formField struct {
	Var, Type, Label string
	Required         bool
	Values           []string
	Options          []string
}

func buildForm(typ, title, instructions string, fields []formField) *stanza.Element {
	x := stanza.New(nsData, "x", "type", typ)
	if title != "" {
		x.Add(stanza.New(nsData, "title").AddText(title))
	}
	if instructions != "" {
		x.Add(stanza.New(nsData, "instructions").AddText(instructions))
	}
	for _, f := range fields {
		fe := stanza.New(nsData, "field", "var", f.Var)
		if f.Type != "" {
			fe.Set("type", f.Type)
		}
		if f.Label != "" {
			fe.Set("label", f.Label)
		}
		if f.Required {
			fe.Add(stanza.New(nsData, "required"))
		}
		for _, o := range f.Options {
			fe.Add(stanza.New(nsData, "option").Add(stanza.New(nsData, "value").AddText(o)))
		}
		for _, v := range f.Values {
			fe.Add(stanza.New(nsData, "value").AddText(v))
		}
		x.Add(fe)
	}
	return x
}

// Stanza error helpers.

// stanzaError is a protocol error mapped once to its wire form.
type stanzaError struct {
	Type      string // cancel, modify, wait, auth
	Condition string // RFC 6120 condition
	App       *stanza.Element
	Text      string
}

func (e *stanzaError) Error() string { return e.Type + "/" + e.Condition }

func errCancel(cond string) *stanzaError { return &stanzaError{Type: "cancel", Condition: cond} }
func errModify(cond string) *stanzaError { return &stanzaError{Type: "modify", Condition: cond} }

var (
	errItemNotFound       = errCancel("item-not-found")
	errResourceConstraint = &stanzaError{Type: "wait", Condition: "resource-constraint"}
	errServiceUnavailable = errCancel("service-unavailable")
)

// iqResult returns the result skeleton answering iq.
func iqResult(iq *stanza.Element, domain string) *stanza.Element {
	r := stanza.New(stanza.NSClient, "iq", "type", "result", "id", iq.Get("id"), "from", domain)
	if to := iq.Get("from"); to != "" {
		r.Set("to", to)
	}
	return r
}

// iqError answers iq with err.
func iqError(iq *stanza.Element, domain string, err *stanzaError) *stanza.Element {
	r := iqResult(iq, domain)
	r.Set("type", "error")
	e := stanza.New(stanza.NSClient, "error", "type", err.Type)
	e.Add(stanza.New(stanza.NSStanzaErr, err.Condition))
	if err.Text != "" {
		e.Add(stanza.New(stanza.NSStanzaErr, "text").AddText(err.Text))
	}
	if err.App != nil {
		e.Add(err.App)
	}
	return r.Add(e)
}
