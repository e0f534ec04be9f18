package router

import (
	"errors"
	"io"

	"pushd/internal/stanza"
)

// StreamError is an RFC 6120 §4.9 stream error: the stream ends with it.
type StreamError struct {
	Condition string
	Text      string
	// Content is the condition element's own content: the address of
	// see-other-host (RFC 6120 §4.9.3.19).
	Content string
}

func (e *StreamError) Error() string {
	if e.Text != "" {
		return "stream error: " + e.Condition + ": " + e.Text
	}
	return "stream error: " + e.Condition
}

// Stream error conditions used by the router (RFC 6120 §4.9.3).
var (
	errBadFormat        = &StreamError{Condition: "bad-format"}
	errConflict         = &StreamError{Condition: "conflict", Text: "replaced by a new stream"}
	errHostUnknown      = &StreamError{Condition: "host-unknown"}
	errInvalidNamespace = &StreamError{Condition: "invalid-namespace"}
	errNotAuthorized    = &StreamError{Condition: "not-authorized"}
	errNotWellFormed    = &StreamError{Condition: "not-well-formed"}
	errRestrictedXML    = &StreamError{Condition: "restricted-xml"}
	errTooBig           = &StreamError{Condition: "policy-violation", Text: "stanza too big"}
	errTooDeep          = &StreamError{Condition: "policy-violation", Text: "nesting too deep"}
	errFlood            = &StreamError{Condition: "policy-violation", Text: "rate limit exceeded"}
	errUnsupportedType  = &StreamError{Condition: "unsupported-stanza-type"}
	errUnsupportedVer   = &StreamError{Condition: "unsupported-version"}
	errConnTimeout      = &StreamError{Condition: "connection-timeout"}
	errSystemShutdown   = &StreamError{Condition: "system-shutdown"}
	errInternal         = &StreamError{Condition: "internal-server-error"}
)

// readError maps what the stanza reader returned to the stream error the
// peer gets, or nil when the connection is simply gone.
func readError(err error) *StreamError {
	var se *StreamError
	switch {
	case errors.As(err, &se):
		return se
	case errors.Is(err, stanza.ErrTooBig):
		return errTooBig
	case errors.Is(err, stanza.ErrTooDeep):
		return errTooDeep
	case errors.Is(err, stanza.ErrRestricted):
		return errRestrictedXML
	case errors.Is(err, stanza.ErrBadFormat):
		return errBadFormat
	case stanza.IsSyntax(err):
		return errNotWellFormed
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return nil
	}
	return nil
}

// appendStreamError serialises a stream error and the end of the stream.
func appendStreamError(b []byte, e *StreamError) []byte {
	b = append(b, "<stream:error>"...)
	cond := stanza.New(stanza.NSStreamErr, e.Condition).AddText(e.Content)
	b = stanza.Append(b, cond, "")
	if e.Text != "" {
		b = stanza.Append(b, stanza.New(stanza.NSStreamErr, "text").AddText(e.Text), "")
	}
	return append(b, "</stream:error></stream:stream>"...)
}

// stanzaError builds the error reply to st (RFC 6120 §8.3): addresses
// swapped, the original payload dropped.
func stanzaError(st *stanza.Element, typ, condition string) *stanza.Element {
	reply := stanza.New(stanza.NSClient, st.Name.Local, "type", "error", "id", st.Get("id"), "from", st.Get("to"), "to", st.Get("from"))
	reply.Add(stanza.New(stanza.NSClient, "error", "type", typ).Add(stanza.New(stanza.NSStanzaErr, condition)))
	return reply
}
