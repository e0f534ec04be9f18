package sip

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"pushd/component/dispatch"
	"pushd/component/payload"
)

// PushParams are a contact's RFC 8599 parameters: what makes a binding a
// push binding.
type PushParams struct {
	Provider dispatch.ProviderName `json:"provider"`
	PRID     string                `json:"prid"`
	Param    string                `json:"param"`
}

// VoIP reports whether an APNS binding asked for PushKit (pn-param ending
// in ".voip", RFC 8599 §9): its pushes go on the VoIP channel.
func (p PushParams) VoIP() bool {
	return p.Provider == dispatch.APNS && strings.HasSuffix(p.Param, ".voip")
}

// Bundle is the app's bundle id the pn-param names ("TEAMID.bundle.id"
// and an optional ".voip"): the APNS topic of its alert pushes, and with
// ".voip" of its VoIP pushes. Empty for other providers.
func (p PushParams) Bundle() string {
	if p.Provider != dispatch.APNS {
		return ""
	}
	_, bundle, _ := strings.Cut(p.Param, ".")
	return strings.TrimSuffix(bundle, ".voip")
}

// Binding is one registered contact of an address-of-record.
type Binding struct {
	// AOR is the user's address-of-record, "user@domain".
	AOR string `json:"aor"`
	// ID is the binding's key within the AOR: the +sip.instance (and
	// reg-id) when the phone sent one, else the contact URI, so that a
	// phone that changes address replaces its binding instead of adding
	// one (RFC 5626 §6).
	ID string `json:"id"`
	// Contact is the URI as registered, without pushd's own parameters.
	Contact string `json:"contact"`
	// Transport is how the REGISTER came ("udp", "tcp", "tls") and Source
	// the address it came from: calls to a phone behind NAT go back there.
	Transport string `json:"transport"`
	Source    string `json:"source"`
	Instance  string `json:"instance,omitempty"`
	// Push is nil for a binding without RFC 8599 parameters.
	Push *PushParams `json:"push,omitempty"`
	// Key is the device's AES-256 key when the phone gave it in the
	// contact (pn-pushd-key, TLS only). Otherwise the key is the XMPP push
	// registration's of the same token, looked up when a push is made.
	Key []byte `json:"key,omitempty"`
	// PNSReg: the phone asked for refresh pushes (+sip.pnsreg).
	PNSReg bool `json:"pnsreg,omitempty"`
	// CallID and CSeq order REGISTERs of one binding (RFC 3261 §10.3 7).
	CallID  string    `json:"call_id"`
	CSeq    uint32    `json:"cseq"`
	Expires time.Time `json:"expires"`
	// Refreshed is set once a reg-refresh push went for the current
	// expiry, so that one registration gets one refresh push.
	Refreshed bool      `json:"refreshed,omitempty"`
	Updated   time.Time `json:"updated"`
}

// Device is the phone's identity across its bindings and channels: the
// push token for a push binding (which is also how its XMPP push
// registration, and so its key, is found), else its instance, else the
// contact.
func (b Binding) Device() string {
	switch {
	case b.Push != nil:
		return string(b.Push.Provider) + "/" + b.Push.PRID
	case b.Instance != "":
		return b.Instance
	}
	return b.Contact
}

// Registration is the dispatcher's view of a push binding. xmpp is the
// push registration the same app made over XMPP with the same token, if
// any (found: true): it brings the device's key, its message token (a
// PushKit binding has only its VoIP token) and its region (C7). Dead
// tokens of pushes made for the binding come back to the registrar.
func (b Binding) Registration(xmpp dispatch.Registration, found bool) dispatch.Registration {
	p := b.Push
	r := dispatch.Registration{Provider: p.Provider}
	if found {
		r = xmpp
		r.VoIPToken = ""
	}
	r.ID, r.Owner, r.Topic = b.AOR+"\x00"+b.ID, RegistrationOwner, p.Bundle()
	if p.VoIP() {
		r.VoIPToken = p.PRID
	} else {
		r.Token = p.PRID
	}
	if len(b.Key) == payload.KeySize {
		var k [payload.KeySize]byte
		copy(k[:], b.Key)
		r.Key = &k
	}
	return r
}

// RegistrationOwner is the dispatcher owner of SIP bindings: dead tokens
// of pushes made for calls come back to the registrar, not to the XMPP
// device registry.
const RegistrationOwner = dispatch.OwnerSIP

// Errors of parsing RFC 8599 parameters; each maps to 555 (RFC 8599 §5.3).
var (
	ErrPushUnsupported = errors.New("sip: push provider not supported")
	ErrPushParams      = errors.New("sip: push parameters missing or malformed")
)

// Bounds on what a phone may store with us (S4).
const (
	maxPRID    = 4096 // FCM tokens are ~160 bytes, APNS 64 hex; generous
	maxPNParam = 256
)

// contactPush reads the RFC 8599 parameters of a contact URI. query is
// true for a bare pn-provider (no pn-prid): the phone asks which providers
// we support (RFC 8599 §4.1.1) and registers no push binding. supported
// lists the providers this node can push through.
func contactPush(get func(string) (string, bool), supported []dispatch.ProviderName) (p *PushParams, query bool, err error) {
	prov, ok := get("pn-provider")
	if !ok {
		return nil, false, nil
	}
	prid, hasPRID := get("pn-prid")
	param, hasParam := get("pn-param")
	name := dispatch.ProviderName(strings.ToLower(prov))
	known := false
	for _, s := range supported {
		known = known || s == name
	}
	if prov != "" && !known {
		return nil, false, fmt.Errorf("%w: %q", ErrPushUnsupported, truncate(prov, 32))
	}
	if !hasPRID && !hasParam {
		return nil, true, nil
	}
	if prov == "" || prid == "" || !hasPRID || len(prid) > maxPRID || len(param) > maxPNParam || !printable(prid) || !printable(param) {
		return nil, false, ErrPushParams
	}
	switch name {
	case dispatch.APNS:
		// TEAMID.bundle.id: a team id and a bundle id of two labels or
		// more, ".voip" aside: the bundle is the push's topic.
		team, bundle, _ := strings.Cut(param, ".")
		if team == "" || !validBundle(strings.TrimSuffix(bundle, ".voip")) {
			return nil, false, ErrPushParams
		}
	case dispatch.FCM:
		if param == "" {
			return nil, false, ErrPushParams
		}
	}
	return &PushParams{Provider: name, PRID: prid, Param: param}, false, nil
}

// contactKey reads pn-pushd-key: the device key in base64url (padding
// optional), the way a SIP-only phone gives pushd its AES-256 key.
func contactKey(v string) ([]byte, error) {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(v, "="))
	if err != nil || len(raw) != payload.KeySize {
		return nil, fmt.Errorf("%w: pn-pushd-key", ErrPushParams)
	}
	return raw, nil
}

func validBundle(b string) bool {
	labels := strings.Split(b, ".")
	return len(labels) >= 2 && !slices.Contains(labels, "")
}

func printable(s string) bool {
	for i := range len(s) {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
