package router

import (
	"bytes"
	"errors"
	"strings"

	"mellium.im/sasl"
	"mellium.im/xmpp/jid"

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

// saslExchange runs one mechanism to its end and returns the
// authenticated bare JID. Errors from the mechanism are reported as
// errSASLFailed without their text: mellium's SCRAM errors quote key
// material, which must not reach logs.
func (c *c2s) saslExchange(mech string, auth *stanza.Element) (jid.JID, error) {
	var user jid.JID
	var userErr error
	lookup := func(name []byte) (jid.JID, error) {
		u, err := jid.New(string(name), c.srv.domain.Domainpart(), "")
		if err != nil {
			return jid.JID{}, sasl.ErrAuthn
		}
		return u, nil
	}
	var m sasl.Mechanism
	switch mech {
	case "SCRAM-SHA-256":
		m = sasl.ScramSha256
	case "SCRAM-SHA-1":
		m = sasl.ScramSha1
	default:
		m = sasl.Plain
	}
	fetch := func(name, identity []byte, mechanism string) ([]byte, []byte, int64, error) {
		if !authzOK(identity, name, c.srv.domain.Domainpart()) {
			return nil, nil, 0, sasl.ErrAuthn
		}
		u, err := lookup(name)
		if err != nil {
			return nil, nil, 0, err
		}
		salt, salted, iter, err := c.srv.accounts.SaltedCredentials(u.Localpart(), mechanism)
		if err != nil {
			return nil, nil, 0, sasl.ErrAuthn
		}
		user = u
		return salt, salted, iter, nil
	}
	permit := func(n *sasl.Negotiator) bool {
		if mech != "PLAIN" {
			return true
		}
		name, pass, identity := n.Credentials()
		if !authzOK(identity, name, c.srv.domain.Domainpart()) {
			return false
		}
		u, err := lookup(name)
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
	n := sasl.NewServer(m, permit, sasl.SaltedCredentials(fetch))
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
