package stanza

import (
	"bytes"
	"encoding/xml"
	"io"
)

// Scanner splits an XML stream into its top-level elements without
// parsing them: it finds where each begins and ends and gives back its
// bytes as they came, for a relay that passes most of them on unread
// (router/carry.go). It keeps the Reader's limits (size, depth) and
// refuses what RFC 6120 §11.1 forbids (comments, processing instructions
// and declarations inside the stream). Its work per byte is constant,
// however the input is split across reads.
type Scanner struct {
	r      io.Reader
	limits Limits
	buf    []byte
	start  int // the unreturned input is buf[start:end]
	end    int
	// BeforeRead, when set, runs before each read of the underlying
	// reader, when everything buffered has been scanned: a relay flushes
	// what it batched before it may block.
	BeforeRead func() error

	// The element being scanned, relative to start.
	pos       int
	state     scanState
	depth     int
	quote     byte
	match     int // bytes of "[CDATA[" or "]]>" matched so far
	nameStart int
	nameEnd   int
	elemStart int
}

type scanState uint8

const (
	scanBetween   scanState = iota // whitespace between top-level elements
	scanOpen                       // just after '<'
	scanName                       // the element's name
	scanTag                        // inside a start tag
	scanQuote                      // an attribute value
	scanSlash                      // '/' in a start tag: '>' must follow
	scanContent                    // character data
	scanEndTag                     // an end tag
	scanBang                       // "<!": only "[CDATA[" may follow, inside an element
	scanCDATA                      // inside a CDATA section
	scanStreamEnd                  // the stream's own end tag
)

// NewScanner returns a Scanner over r with the given limits.
func NewScanner(r io.Reader, limits Limits) *Scanner {
	if limits.MaxBytes <= 0 {
		limits.MaxBytes = DefaultLimits().MaxBytes
	}
	if limits.MaxDepth <= 0 {
		limits.MaxDepth = DefaultLimits().MaxDepth
	}
	return &Scanner{r: r, limits: limits, buf: make([]byte, readahead)}
}

// Buffered is the input read but not yet returned.
func (s *Scanner) Buffered() int { return s.end - s.start }

// fill reads more input, keeping the unreturned part.
func (s *Scanner) fill() error {
	if s.start > 0 {
		n := copy(s.buf, s.buf[s.start:s.end])
		s.start, s.end = 0, n
	}
	if s.end == len(s.buf) {
		ceiling := int(s.limits.MaxBytes) + readahead
		if len(s.buf) >= ceiling {
			return ErrTooBig
		}
		grown := make([]byte, min(2*len(s.buf), ceiling))
		copy(grown, s.buf[:s.end])
		s.buf = grown
	}
	if s.BeforeRead != nil {
		if err := s.BeforeRead(); err != nil {
			return err
		}
	}
	n, err := s.r.Read(s.buf[s.end:])
	s.end += n
	if n > 0 {
		return nil
	}
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	if err == nil {
		return nil
	}
	return err
}

// Header reads up to and including the stream's opening tag: its bytes
// (an XML declaration before it included) and the tag as the Reader's
// Header returns it.
func (s *Scanner) Header() ([]byte, xml.StartElement, error) {
	// The header is small: find the end of the opening tag, then let
	// encoding/xml read it, declaration and namespaces included.
	quote := byte(0)
	for i := s.start; ; i++ {
		for i >= s.end {
			off := i - s.start
			if off > int(s.limits.MaxBytes) {
				return nil, xml.StartElement{}, ErrTooBig
			}
			if err := s.fill(); err != nil {
				return nil, xml.StartElement{}, err
			}
			i = s.start + off
		}
		c := s.buf[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '>' && i > s.start && s.buf[i-1] != '?':
			raw := s.buf[s.start : i+1]
			start, err := headerTag(raw)
			if err != nil {
				return nil, start, err
			}
			s.start = i + 1
			s.reset()
			return raw, start, nil
		}
	}
}

// headerTag reads the opening tag in raw with a Reader, which checks
// what may come before it and resolves its namespaces.
func headerTag(raw []byte) (xml.StartElement, error) {
	return NewReader(bytes.NewReader(raw), Limits{MaxBytes: int64(len(raw)) + 1}).Header()
}

func (s *Scanner) reset() {
	s.pos, s.state, s.depth, s.match = 0, scanBetween, 0, 0
}

// Next returns the next top-level element's bytes and its name as
// written (with its prefix, if any); both are valid until the next call.
// It returns io.EOF at the stream's end tag.
func (s *Scanner) Next() (raw, name []byte, err error) {
	for {
		if s.start+s.pos >= s.end {
			if s.pos > int(s.limits.MaxBytes) {
				return nil, nil, ErrTooBig
			}
			if err := s.fill(); err != nil {
				return nil, nil, err
			}
			continue
		}
		c := s.buf[s.start+s.pos]
		s.pos++
		done, err := s.step(c)
		if err != nil {
			return nil, nil, err
		}
		if s.pos-s.elemStart > int(s.limits.MaxBytes) {
			return nil, nil, ErrTooBig
		}
		if done {
			base := s.start
			raw = s.buf[base+s.elemStart : base+s.pos]
			name = s.buf[base+s.nameStart : base+s.nameEnd]
			s.start += s.pos
			s.reset()
			return raw, name, nil
		}
		if s.state == scanStreamEnd && c == '>' {
			s.start += s.pos
			s.reset()
			return nil, nil, io.EOF
		}
	}
}

// step advances the state machine over one byte at s.pos-1; done when a
// top-level element ended with it.
func (s *Scanner) step(c byte) (done bool, err error) {
	at := s.pos - 1
	switch s.state {
	case scanBetween:
		switch c {
		case ' ', '\t', '\r', '\n':
			// Whitespace keepalives count towards the limit until an
			// element starts.
		case '<':
			s.elemStart, s.state = at, scanOpen
		default:
			return false, ErrBadFormat
		}
	case scanOpen:
		switch c {
		case '/':
			if s.depth == 0 {
				s.state = scanStreamEnd
			} else {
				s.state = scanEndTag
			}
		case '!':
			if s.depth == 0 {
				return false, ErrRestricted
			}
			s.state, s.match = scanBang, 0
		case '?':
			return false, ErrRestricted
		default:
			if !nameByte(c) {
				return false, ErrBadFormat
			}
			s.depth++
			if s.depth > s.limits.MaxDepth {
				return false, ErrTooDeep
			}
			if s.depth == 1 {
				s.nameStart = at
			}
			s.state = scanName
		}
	case scanName:
		if nameByte(c) {
			return false, nil
		}
		if s.depth == 1 {
			s.nameEnd = at
		}
		s.state = scanTag
		return s.step(c)
	case scanTag:
		switch c {
		case '"', '\'':
			s.quote, s.state = c, scanQuote
		case '/':
			s.state = scanSlash
		case '>':
			s.state = scanContent
		case '<':
			return false, ErrBadFormat
		}
	case scanQuote:
		switch c {
		case s.quote:
			s.state = scanTag
		case '<':
			return false, ErrBadFormat
		}
	case scanSlash:
		if c != '>' {
			return false, ErrBadFormat
		}
		s.depth--
		s.state = scanContent
		if s.depth == 0 {
			return true, nil
		}
	case scanContent:
		if c == '<' {
			s.state = scanOpen
		}
	case scanEndTag:
		if c == '>' {
			s.depth--
			s.state = scanContent
			if s.depth == 0 {
				return true, nil
			}
		}
	case scanBang:
		const cdata = "[CDATA["
		if c != cdata[s.match] {
			return false, ErrRestricted // a comment or a declaration
		}
		if s.match++; s.match == len(cdata) {
			s.state, s.match = scanCDATA, 0
		}
	case scanCDATA:
		switch {
		case c == ']' && s.match < 2:
			s.match++
		case c == ']':
			// "]]]": still two closing brackets matched
		case c == '>' && s.match == 2:
			s.state = scanContent
		default:
			s.match = 0
		}
	case scanStreamEnd:
		if c == '<' {
			return false, ErrBadFormat
		}
	}
	return false, nil
}

// nameByte: a byte that may be part of an XML name as written (with a
// prefix): ASCII name characters, and any byte of a multi-byte UTF-8
// character, which the receiving node's parser judges.
func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == '.' || c == ':' || c >= 0x80
}
