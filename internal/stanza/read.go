package stanza

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
)

// Errors from Reader, each mapped by the router to one stream error.
var (
	// ErrTooBig: a stanza (or the space between two) exceeded Limits.MaxBytes.
	ErrTooBig = errors.New("stanza: size limit exceeded")
	// ErrTooDeep: elements nested deeper than Limits.MaxDepth.
	ErrTooDeep = errors.New("stanza: depth limit exceeded")
	// ErrRestricted: a DTD, entity declaration, comment or processing
	// instruction, all of which RFC 6120 §11.1 forbids.
	ErrRestricted = errors.New("stanza: restricted XML")
	// ErrBadFormat: text where only elements may stand, or a missing header.
	ErrBadFormat = errors.New("stanza: bad format")
)

// Limits bound what one peer can make the reader hold.
type Limits struct {
	// MaxBytes is the largest top-level element, in bytes of input
	// (default 256 KiB).
	MaxBytes int64
	// MaxDepth is the deepest nesting inside a top-level element, the
	// element itself being depth 1 (default 32).
	MaxDepth int
}

// DefaultLimits returns the limits pushd uses unless configured otherwise.
func DefaultLimits() Limits { return Limits{MaxBytes: 256 << 10, MaxDepth: 32} }

// readahead is what encoding/xml's bufio may pull ahead of the token it
// returns; the byte ceiling on the connection allows for it.
const readahead = 4096

// Reader reads one XML stream: its header, then whole top-level elements.
// It is not safe for concurrent use.
type Reader struct {
	src    *ceilingReader
	d      *xml.Decoder
	limits Limits
	open   bool
	last   int64 // input bytes of the element Next returned last
}

// LastSize is the number of input bytes the element Next returned last
// took on the wire (whitespace before it included).
func (r *Reader) LastSize() int { return int(r.last) }

// NewReader returns a Reader over r. A stream restart (after STARTTLS or
// SASL) takes a new Reader.
func NewReader(r io.Reader, limits Limits) *Reader {
	if limits.MaxBytes <= 0 {
		limits.MaxBytes = DefaultLimits().MaxBytes
	}
	if limits.MaxDepth <= 0 {
		limits.MaxDepth = DefaultLimits().MaxDepth
	}
	src := &ceilingReader{r: r, max: limits.MaxBytes + readahead}
	d := xml.NewDecoder(src)
	d.Strict = true
	return &Reader{src: src, d: d, limits: limits}
}

// Header reads up to and including the stream's opening tag, which it
// returns. Only an XML declaration and whitespace may come before it.
func (r *Reader) Header() (xml.StartElement, error) {
	for {
		tok, err := r.d.Token()
		if err != nil {
			return xml.StartElement{}, r.wrap(err)
		}
		switch t := tok.(type) {
		case xml.ProcInst:
			if t.Target != "xml" {
				return xml.StartElement{}, ErrRestricted
			}
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return xml.StartElement{}, ErrBadFormat
			}
		case xml.StartElement:
			r.open = true
			return t, nil
		case xml.Directive, xml.Comment:
			return xml.StartElement{}, ErrRestricted
		default:
			return xml.StartElement{}, ErrBadFormat
		}
	}
}

// Next returns the next top-level element of the stream. It returns
// io.EOF when the peer closed the stream with its end tag. Whitespace
// between elements (keepalives) is skipped but counts towards MaxBytes.
func (r *Reader) Next() (*Element, error) {
	start := r.d.InputOffset()
	// The decoder and the ceiling count from the same origin, so this caps
	// what may be buffered for this element at MaxBytes plus read-ahead.
	r.src.max = start + r.limits.MaxBytes + readahead
	var stack []*Element
	for {
		tok, err := r.d.Token()
		if err != nil {
			return nil, r.wrap(err)
		}
		if r.d.InputOffset()-start > r.limits.MaxBytes {
			return nil, ErrTooBig
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if len(stack) >= r.limits.MaxDepth {
				return nil, ErrTooDeep
			}
			if !validNames(t) {
				// encoding/xml splits "p:0" into prefix and an invalid local
				// name; written back, it would not be XML.
				return nil, ErrBadFormat
			}
			e := &Element{Name: normalise(t.Name), Attr: dropNamespaceDecls(t.Attr)}
			if len(stack) > 0 {
				parent := stack[len(stack)-1]
				parent.Children = append(parent.Children, e)
			}
			stack = append(stack, e)
		case xml.EndElement:
			if len(stack) == 0 {
				// The stream's own end tag.
				r.open = false
				return nil, io.EOF
			}
			e := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				r.last = r.d.InputOffset() - start
				return e, nil
			}
		case xml.CharData:
			if len(stack) == 0 {
				if len(bytes.TrimSpace(t)) != 0 {
					return nil, ErrBadFormat
				}
				continue
			}
			parent := stack[len(stack)-1]
			if n := len(parent.Children); n > 0 {
				if prev, ok := parent.Children[n-1].(Text); ok {
					parent.Children[n-1] = prev + Text(t)
					continue
				}
			}
			parent.Children = append(parent.Children, Text(t))
		default:
			// Directive, Comment, ProcInst.
			return nil, ErrRestricted
		}
	}
}

// wrap turns decoder errors into the reader's own where they are the
// reader's doing, and leaves syntax and I/O errors as they are.
func (r *Reader) wrap(err error) error {
	if errors.Is(err, ErrTooBig) {
		return ErrTooBig
	}
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		if se.Msg == "unexpected EOF" {
			return io.ErrUnexpectedEOF
		}
		return fmt.Errorf("stanza: not well-formed: %w", err)
	}
	return err
}

// IsSyntax reports whether err means the peer sent XML that is not
// well-formed.
func IsSyntax(err error) bool {
	var se *xml.SyntaxError
	return errors.As(err, &se)
}

// normalise reads the stanza namespaces of every stream kind as
// jabber:client; see Element.
func normalise(n xml.Name) xml.Name {
	switch n.Space {
	case NSServer, NSComponent:
		n.Space = NSClient
	}
	return n
}

func dropNamespaceDecls(attrs []xml.Attr) []xml.Attr {
	out := attrs[:0]
	for _, a := range attrs {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// ceilingReader fails once more than max bytes have been read in all, so
// that one endless text node cannot make the decoder buffer without bound.
type ceilingReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (c *ceilingReader) Read(p []byte) (int, error) {
	if c.n >= c.max {
		return 0, ErrTooBig
	}
	if rest := c.max - c.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// validNames reports whether the element's and its attributes' local
// names are XML names without a colon (Namespaces in XML §3).
func validNames(t xml.StartElement) bool {
	if !isNCName(t.Name.Local) {
		return false
	}
	for _, a := range t.Attr {
		if !isNCName(a.Name.Local) {
			return false
		}
	}
	return true
}

func isNCName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_' || unicode.IsLetter(r):
		case i > 0 && (r == '-' || r == '.' || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Mc, r) || r == 0xB7):
		default:
			return false
		}
	}
	return true
}

// Unmarshal reads back one element that Marshal wrote with parentNS (the
// default namespace it inherits), nested at most maxDepth deep. Its size
// is bounded by b's: what pushd stored, or a peer replicated, was bounded
// when it came in.
func Unmarshal(b []byte, parentNS string, maxDepth int) (*Element, error) {
	open := "<u>"
	if parentNS != "" {
		open = `<u xmlns="` + parentNS + `">`
	}
	src := io.MultiReader(strings.NewReader(open), bytes.NewReader(b))
	r := NewReader(src, Limits{MaxBytes: int64(len(b)) + 1024, MaxDepth: maxDepth})
	if _, err := r.Header(); err != nil {
		return nil, err
	}
	return r.Next()
}
