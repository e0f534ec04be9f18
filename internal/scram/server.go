package scram

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Lookup returns the credentials of username (the SCRAM "n" attribute,
// unescaped) for the server's mechanism. authzid is the authorisation
// identity of the GS2 header, empty when the client sent none: Lookup
// decides whether the user may act as it. Any error ends the exchange as
// a failed login.
type Lookup func(username, authzid string) (Credentials, error)

// Server runs one SCRAM exchange (RFC 5802 §5) from the server's side.
// Not safe for concurrent use; one per login attempt.
type Server struct {
	mech   Mechanism
	lookup Lookup
	nonce  string // the server's half of the nonce
	step   int

	// From the client's first message to the final check.
	gs2Header  []byte
	nonceAll   []byte
	authPrefix []byte // client-first-message-bare "," server-first-message ","
	keys       Keys
}

// NewServer starts an exchange for mech with a fresh random nonce.
func NewServer(mech Mechanism, lookup Lookup) *Server {
	b := make([]byte, 18)
	// crypto/rand.Read never returns an error (Go 1.24+); it aborts the
	// process if the system cannot supply randomness.
	_, _ = rand.Read(b)
	return newServer(mech, lookup, base64.RawStdEncoding.EncodeToString(b))
}

// newServer is NewServer with a chosen nonce, for the RFC test vectors.
func newServer(mech Mechanism, lookup Lookup, nonce string) *Server {
	return &Server{mech: mech, lookup: lookup, nonce: nonce}
}

// Step takes the client's next message and returns the server's answer:
// the server-first-message (more is true), then the server-final-message
// carrying the server's signature (more is false: the client is
// authenticated). An error means the login failed; out is then nil.
func (s *Server) Step(in []byte) (more bool, out []byte, err error) {
	switch s.step {
	case 0:
		out, err = s.first(in)
		if err != nil {
			s.step = 2
			return false, nil, err
		}
		s.step = 1
		return true, out, nil
	case 1:
		s.step = 2
		out, err = s.final(in)
		if err != nil {
			return false, nil, err
		}
		return false, out, nil
	}
	return false, nil, ErrState
}

// first reads the client-first-message:
//
//	gs2-cbind-flag "," [ "a=" saslname ] "," [ "m=" … "," ] "n=" saslname "," "r=" c-nonce [ "," extensions ]
func (s *Server) first(msg []byte) ([]byte, error) {
	cbind, rest, ok := bytes.Cut(msg, []byte{','})
	if !ok {
		return nil, fmt.Errorf("%w: no GS2 header", ErrMalformed)
	}
	switch {
	case string(cbind) == "n", string(cbind) == "y":
		// "y": the client could bind but believes the server cannot,
		// which is true: no -PLUS mechanism is offered.
	case bytes.HasPrefix(cbind, []byte("p=")):
		return nil, fmt.Errorf("%w: channel binding", ErrUnsupported)
	default:
		return nil, fmt.Errorf("%w: bad channel-binding flag", ErrMalformed)
	}
	authz, bare, ok := bytes.Cut(rest, []byte{','})
	if !ok {
		return nil, fmt.Errorf("%w: GS2 header not ended", ErrMalformed)
	}
	var authzid string
	if len(authz) > 0 {
		v, ok := bytes.CutPrefix(authz, []byte("a="))
		if !ok {
			return nil, fmt.Errorf("%w: bad authzid", ErrMalformed)
		}
		var err error
		if authzid, err = saslname(v); err != nil {
			return nil, err
		}
	}
	s.gs2Header = msg[:len(cbind)+1+len(authz)+1]

	fields := bytes.Split(bare, []byte{','})
	if bytes.HasPrefix(fields[0], []byte("m=")) {
		// RFC 5802 §5.1: a mandatory extension the server does not know
		// fails the exchange.
		return nil, fmt.Errorf("%w: mandatory extension", ErrUnsupported)
	}
	if len(fields) < 2 {
		return nil, fmt.Errorf("%w: client-first-message too short", ErrMalformed)
	}
	n, ok := bytes.CutPrefix(fields[0], []byte("n="))
	if !ok {
		return nil, fmt.Errorf("%w: no username", ErrMalformed)
	}
	username, err := saslname(n)
	if err != nil {
		return nil, err
	}
	cnonce, ok := bytes.CutPrefix(fields[1], []byte("r="))
	if !ok || !printable(cnonce) {
		return nil, fmt.Errorf("%w: bad client nonce", ErrMalformed)
	}

	creds, err := s.lookup(username, authzid)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAuthn, err)
	}
	if size := s.mech.Size(); len(creds.StoredKey) != size || len(creds.ServerKey) != size ||
		len(creds.Salt) == 0 || creds.Iterations <= 0 {
		return nil, fmt.Errorf("%w: unusable %s credentials", ErrAuthn, s.mech.Name)
	}
	s.keys = creds.Keys

	s.nonceAll = append(append([]byte(nil), cnonce...), s.nonce...)
	sfirst := make([]byte, 0, 64+len(s.nonceAll)+len(creds.Salt)*2)
	sfirst = append(sfirst, "r="...)
	sfirst = append(sfirst, s.nonceAll...)
	sfirst = append(sfirst, ",s="...)
	sfirst = base64.StdEncoding.AppendEncode(sfirst, creds.Salt)
	sfirst = append(sfirst, ",i="...)
	sfirst = strconv.AppendInt(sfirst, int64(creds.Iterations), 10)

	s.authPrefix = make([]byte, 0, len(bare)+len(sfirst)+2)
	s.authPrefix = append(s.authPrefix, bare...)
	s.authPrefix = append(s.authPrefix, ',')
	s.authPrefix = append(s.authPrefix, sfirst...)
	s.authPrefix = append(s.authPrefix, ',')
	return sfirst, nil
}

// final reads the client-final-message and checks the proof:
//
//	"c=" base64(gs2-header) "," "r=" nonce [ "," extensions ] "," "p=" base64(proof)
func (s *Server) final(msg []byte) ([]byte, error) {
	i := bytes.LastIndexByte(msg, ',')
	if i < 0 {
		return nil, fmt.Errorf("%w: client-final-message too short", ErrMalformed)
	}
	withoutProof := msg[:i]
	p, ok := bytes.CutPrefix(msg[i+1:], []byte("p="))
	if !ok {
		return nil, fmt.Errorf("%w: proof is not last", ErrMalformed)
	}
	proof, err := base64.StdEncoding.DecodeString(string(p))
	if err != nil || len(proof) != s.mech.Size() {
		return nil, fmt.Errorf("%w: bad proof encoding", ErrMalformed)
	}
	fields := bytes.Split(withoutProof, []byte{','})
	if len(fields) < 2 {
		return nil, fmt.Errorf("%w: client-final-message too short", ErrMalformed)
	}
	c, ok := bytes.CutPrefix(fields[0], []byte("c="))
	if !ok {
		return nil, fmt.Errorf("%w: no channel binding", ErrMalformed)
	}
	cb, err := base64.StdEncoding.DecodeString(string(c))
	if err != nil {
		return nil, fmt.Errorf("%w: bad channel-binding encoding", ErrMalformed)
	}
	if !bytes.Equal(cb, s.gs2Header) {
		// Without binding, c= repeats the GS2 header; a difference means
		// something between client and server changed the first message.
		return nil, fmt.Errorf("%w: channel binding differs from the GS2 header", ErrAuthn)
	}
	r, ok := bytes.CutPrefix(fields[1], []byte("r="))
	if !ok || !bytes.Equal(r, s.nonceAll) {
		return nil, fmt.Errorf("%w: nonce differs", ErrAuthn)
	}

	authMessage := append(s.authPrefix, withoutProof...)
	clientKey := s.mech.hmac(s.keys.StoredKey, authMessage)
	subtle.XORBytes(clientKey, clientKey, proof)
	h := s.mech.hash()
	h.Write(clientKey)
	if !hmac.Equal(h.Sum(nil), s.keys.StoredKey) {
		return nil, fmt.Errorf("%w: %s proof", ErrAuthn, s.mech.Name)
	}
	out := append([]byte("v="), base64.StdEncoding.EncodeToString(s.mech.hmac(s.keys.ServerKey, authMessage))...)
	return out, nil
}

// saslname undoes RFC 5802's escaping of ',' and '=' (=2C, =3D).
func saslname(b []byte) (string, error) {
	if len(b) == 0 || !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
		return "", fmt.Errorf("%w: bad saslname", ErrMalformed)
	}
	if bytes.IndexByte(b, '=') < 0 {
		return string(b), nil
	}
	var sb strings.Builder
	for len(b) > 0 {
		before, after, found := bytes.Cut(b, []byte{'='})
		sb.Write(before)
		if !found {
			break
		}
		switch {
		case bytes.HasPrefix(after, []byte("2C")):
			sb.WriteByte(',')
		case bytes.HasPrefix(after, []byte("3D")):
			sb.WriteByte('=')
		default:
			return "", fmt.Errorf("%w: bad escape in saslname", ErrMalformed)
		}
		b = after[2:]
	}
	return sb.String(), nil
}

// printable is RFC 5802's nonce alphabet: visible ASCII except ','.
func printable(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}
