package stanza

import "strconv"

// Append serialises e to dst and returns the extended slice. parentNS is
// the default namespace in scope where e is written: a top-level stanza on
// any stream is appended with NSClient, which leaves its namespace to the
// stream header (jabber:client or jabber:component:accept).
func Append(dst []byte, e *Element, parentNS string) []byte {
	return appendElement(dst, e, parentNS)
}

// NSInternal marks children pushd adds for its own nodes (the cluster's
// forwarding id); AppendExternal leaves them out.
const NSInternal = "urn:pushd:internal:0"

// AppendExternal is Append for what leaves pushd (clients, components):
// direct children in NSInternal are left out.
func AppendExternal(dst []byte, e *Element, parentNS string) []byte {
	for _, n := range e.Children {
		if c, ok := n.(*Element); ok && c.Name.Space == NSInternal {
			stripped := *e
			stripped.Children = make([]Node, 0, len(e.Children)-1)
			for _, n := range e.Children {
				if c, ok := n.(*Element); !ok || c.Name.Space != NSInternal {
					stripped.Children = append(stripped.Children, n)
				}
			}
			return appendElement(dst, &stripped, parentNS)
		}
	}
	return appendElement(dst, e, parentNS)
}

// Marshal is Append to a fresh slice.
func Marshal(e *Element, parentNS string) []byte {
	return appendElement(make([]byte, 0, 256), e, parentNS)
}

// Writer adapts Append to an io.StringWriter for String.
type Writer struct {
	w interface{ WriteString(string) (int, error) }
}

func (w *Writer) element(e *Element, parentNS string) {
	_, _ = w.w.WriteString(string(appendElement(nil, e, parentNS)))
}

func appendElement(b []byte, e *Element, parentNS string) []byte {
	b = append(b, '<')
	b = append(b, e.Name.Local...)
	if e.Name.Space != parentNS {
		b = append(b, ` xmlns="`...)
		b = appendEscaped(b, e.Name.Space, true)
		b = append(b, '"')
	}
	prefixes := 0
	for _, a := range e.Attr {
		switch a.Name.Space {
		case "":
			b = append(b, ' ')
		case NSXML, "xml":
			b = append(b, " xml:"...)
		default:
			// A foreign-namespace attribute gets a prefix declared on this
			// element; readers resolved the sender's prefix away.
			prefixes++
			p := "a" + strconv.Itoa(prefixes)
			b = append(b, " xmlns:"+p+`="`...)
			b = appendEscaped(b, a.Name.Space, true)
			b = append(b, `" `+p+":"...)
		}
		b = append(b, a.Name.Local...)
		b = append(b, `="`...)
		b = appendEscaped(b, a.Value, true)
		b = append(b, '"')
	}
	if len(e.Children) == 0 {
		return append(b, "/>"...)
	}
	b = append(b, '>')
	for _, n := range e.Children {
		switch c := n.(type) {
		case *Element:
			b = appendElement(b, c, e.Name.Space)
		case Text:
			b = appendEscaped(b, string(c), false)
		}
	}
	b = append(b, "</"...)
	b = append(b, e.Name.Local...)
	return append(b, '>')
}

func appendEscaped(b []byte, s string, attr bool) []byte {
	last := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '"':
			if !attr {
				continue
			}
			esc = "&quot;"
		case '\'':
			if !attr {
				continue
			}
			esc = "&apos;"
		case '\r':
			esc = "&#xD;"
		case '\n', '\t':
			if !attr {
				continue
			}
			if s[i] == '\n' {
				esc = "&#xA;"
			} else {
				esc = "&#x9;"
			}
		default:
			continue
		}
		b = append(b, s[last:i]...)
		b = append(b, esc...)
		last = i + 1
	}
	return append(b, s[last:]...)
}

// AppendStart writes a start tag with attributes but no children, for
// stream headers; attrs are name, value pairs written in order.
func AppendStart(b []byte, name string, attrs ...string) []byte {
	b = append(b, '<')
	b = append(b, name...)
	for i := 0; i+1 < len(attrs); i += 2 {
		if attrs[i+1] == "" {
			continue
		}
		b = append(b, ' ')
		b = append(b, attrs[i]...)
		b = append(b, `="`...)
		b = appendEscaped(b, attrs[i+1], true)
		b = append(b, '"')
	}
	return append(b, '>')
}
