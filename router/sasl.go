package router

import (
	"bytes"
	"errors"
	"strings"

	"mellium.im/sasl"
	"mellium.im/xmpp/jid"

	"pushd/internal/scram"
	"pushd/internal/stanza"
)

var (
	errSASLAborted   = errors.New("router: SASL aborted by client")
	errSASLMalformed = errors.New("router: malformed SASL data")
	errSASLFailed    = errors.New("router: SASL authentication failed")
)

func isSASLFailure(err error) bool {
	return errors.Is(err, errSASLFailed)
}

// Accounts authenticates users; user is the SASL username, the localpart
// of a bare JID at the router's domain. It holds nothing password-equivalent
// (S5): SCRAM is verified from StoredKey/ServerKey, PLAIN by deriving them.
type Accounts interface {
	SCRAMCredentials(user, mechanism string) (scram.Credentials, error)
	VerifyPlain(user, password string) (bool, error)
}

// saslStepper is one mechanism's server side: internal/scram for SCRAM
// (it verifies from StoredKey/ServerKey, S5), mellium.im/sasl for PLAIN.
type saslStepper interface {
	Step(in []byte) (more bool, out []byte, err error)
}

// saslExchange runs one mechanism to its end and returns the
// authenticated bare JID. Errors from the mechanism are reported as
// errSASLFailed without their text: they may quote the client's messages,
// which must not reach logs.
func (c *c2s) saslExchange(mech string, auth *stanza.Element) (jid.JID, error) {
	var user jid.JID
	var userErr error
	lookup := func(name string) (jid.JID, error) {
		u, err := jid.New(name, c.srv.domain.Domainpart(), "")
		if err != nil {
			return jid.JID{}, sasl.ErrAuthn
		}
		return u, nil
	}
	var n saslStepper
	if m, ok := scram.ByName(mech); ok {
		n = scram.NewServer(m, func(name, identity string) (scram.Credentials, error) {
			if !authzOK([]byte(identity), []byte(name), c.srv.domain.Domainpart()) {
				return scram.Credentials{}, sasl.ErrAuthn
			}
			u, err := lookup(name)
			if err != nil {
				return scram.Credentials{}, err
			}
			creds, err := c.srv.accounts.SCRAMCredentials(u.Localpart(), mech)
			if err != nil {
				return scram.Credentials{}, err
			}
			// Set before the proof is checked; Step's error decides.
			user = u
			return creds, nil
		})
	} else {
		permit := func(n *sasl.Negotiator) bool {
			name, pass, identity := n.Credentials()
			if !authzOK(identity, name, c.srv.domain.Domainpart()) {
				return false
			}
			u, err := lookup(string(name))
			if err != nil {
				return false
			}
			ok, err := c.srv.accounts.VerifyPlain(u.Localpart(), string(pass))
			if err != nil || !ok {
				userErr = errSASLFailed
				return false
			}
			user = u
			return true
		}
		n = sasl.NewServer(sasl.Plain, permit)
	}
	data, err := decodeSASL(auth)
	if err != nil {
		return jid.JID{}, err
	}
	// No initial response: ask for one with an empty challenge.
	askFirst := len(data) == 0
	for {
		if askFirst {
			askFirst = false
			c.out = appendSASL(c.out, "challenge", nil)
			if data, err = c.readResponse(); err != nil {
				return jid.JID{}, err
			}
			continue
		}
		more, resp, err := n.Step(data)
		if err != nil {
			if userErr != nil {
				return jid.JID{}, userErr
			}
			return jid.JID{}, errSASLFailed
		}
		if !more {
			if user.Localpart() == "" {
				return jid.JID{}, errSASLFailed
			}
			c.out = appendSASL(c.out, "success", resp)
			return user, c.flush()
		}
		c.out = appendSASL(c.out, "challenge", resp)
		if data, err = c.readResponse(); err != nil {
			return jid.JID{}, err
		}
	}
}

// readResponse flushes a challenge and reads the client's answer.
func (c *c2s) readResponse() ([]byte, error) {
	if err := c.flush(); err != nil {
		return nil, err
	}
	el, err := c.r.Next()
	if err != nil {
		return nil, err
	}
	switch {
	case el.Is(stanza.NSSASL, "abort"):
		return nil, errSASLAborted
	case el.Is(stanza.NSSASL, "response"):
		return decodeSASL(el)
	}
	return nil, errNotAuthorized
}

// authzOK accepts an empty authorization identity or the user's own bare
// JID: pushd has no proxy authorisation.
func authzOK(identity, name []byte, domain string) bool {
	if len(identity) == 0 {
		return true
	}
	return strings.EqualFold(string(identity), string(name)+"@"+domain) || bytes.Equal(identity, name)
}
