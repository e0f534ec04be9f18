package payload

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Channel is the push channel of a device: iOS apps have a message channel
// (user-visible alert) and a VoIP channel (PushKit); FCM has one channel and
// ignores the distinction.
type Channel string

// The two channels.
const (
	ChannelMessage Channel = "message"
	ChannelVoIP    Channel = "voip"
)

// Valid reports whether c is a known channel.
func (c Channel) Valid() bool { return c == ChannelMessage || c == ChannelVoIP }

// Sealed is a push ready to leave pushd: the coarse type (a service field
// used to pick a generic alert text) and the ciphertext. Enc is empty for a
// content-free wake-up. Nothing personal is in clear, so a Sealed value may
// be persisted and logged by size.
type Sealed struct {
	Type Type   `json:"type"`
	Enc  string `json:"enc,omitempty"`
}

// Errors of Prepare.
var (
	// ErrClearPersonal: a router-encrypted payload came with personal fields
	// in clear as well; S2 says refuse rather than forward them.
	ErrClearPersonal = errors.New("payload: personal fields in clear next to an encrypted payload")
	// ErrNotCiphertext: the pass-through value is not a sealed payload.
	ErrNotCiphertext = errors.New("payload: pass-through value is not ciphertext")
	// ErrType: the payload type is not one of payload v1's.
	ErrType = errors.New("payload: unknown type")
)

// Prepare turns what a trigger carries into what may leave pushd:
//   - routerEnc set (the router encrypted already, tigase:push:encrypt):
//     passed through untouched; p must then carry no personal field;
//   - key set: p sealed under it;
//   - no key: p stripped to a content-free wake-up (no enc at all).
func Prepare(key *[KeySize]byte, p Payload, routerEnc string) (Sealed, error) {
	if !p.Type.Valid() {
		return Sealed{}, fmt.Errorf("%w: %q", ErrType, p.Type)
	}
	if routerEnc != "" {
		if p.HasPersonal() {
			return Sealed{}, ErrClearPersonal
		}
		if !ValidEnc(routerEnc) {
			return Sealed{}, ErrNotCiphertext
		}
		return Sealed{Type: p.Type, Enc: routerEnc}, nil
	}
	if key == nil {
		return Sealed{Type: Strip(p).Type}, nil
	}
	enc, err := Seal(*key, p)
	if err != nil {
		return Sealed{}, err
	}
	return Sealed{Type: p.Type, Enc: enc}, nil
}

// Generic alert texts shown until the app's notification service extension
// replaces them with the decrypted content. They reveal only the family of
// the push (message or call), never who or what.
const (
	AlertMessage = "New message"
	AlertCall    = "Call"
)

type apnsAlert struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body"`
}

type apnsAps struct {
	Alert            *apnsAlert `json:"alert,omitempty"`
	ContentAvailable int        `json:"content-available,omitempty"`
	MutableContent   int        `json:"mutable-content,omitempty"`
	Sound            string     `json:"sound,omitempty"`
}

// apnsBody is the body's shape; APNSBody writes what encoding/json makes
// of it (a test holds them equal).
type apnsBody struct {
	Aps apnsAps `json:"aps"`
	V   int     `json:"v"`
	TID string  `json:"tid"`
	Enc string  `json:"enc,omitempty"`
}

// APNSBody builds the JSON body of an APNS request:
// {"aps": …, "v": 1, "tid": …, "enc": …}. On the message channel aps is a
// generic alert with mutable-content 1 so the notification service
// extension can decrypt; on the VoIP channel aps is empty (PushKit has no
// alert: the app reports a CallKit call from the decrypted payload). A
// reg-refresh is a background push on the message channel: aps is
// content-available 1 alone (no alert, no sound), which wakes the app
// without showing anything, so that it refreshes its SIP registration.
// Only the call family may ride the VoIP channel: a VoIP push that reports
// no call gets the app killed by iOS.
//
// Every push builds one, so the fixed parts are written as bytes and only
// the tracking id and enc are encoded; the result is what encoding/json
// makes of apnsBody.
func APNSBody(ch Channel, trackingID string, s Sealed) ([]byte, error) {
	var aps string
	switch ch {
	case ChannelMessage:
		switch {
		case s.Type == TypeRegRefresh:
			aps = apsBackground
		case s.Type.IsCall():
			aps = apsCall
		default:
			aps = apsMessage
		}
	case ChannelVoIP:
		if !s.Type.IsCall() {
			return nil, fmt.Errorf("payload: %q push on the VoIP channel", s.Type)
		}
		aps = apsVoIP
	default:
		return nil, fmt.Errorf("payload: unknown channel %q", ch)
	}
	b := make([]byte, 0, len(aps)+len(trackingID)+len(s.Enc)+32)
	b = append(b, aps...)
	b = append(b, `,"v":`...)
	b = strconv.AppendInt(b, Version, 10)
	b = append(b, `,"tid":`...)
	b = appendJSONString(b, trackingID)
	if s.Enc != "" {
		b = append(b, `,"enc":`...)
		b = appendJSONString(b, s.Enc)
	}
	return append(b, '}'), nil
}

// The aps member of each body, as encoding/json writes apnsAps.
var (
	apsMessage    = apsJSON(apnsAps{Alert: &apnsAlert{Body: AlertMessage}, MutableContent: 1, Sound: "default"})
	apsCall       = apsJSON(apnsAps{Alert: &apnsAlert{Body: AlertCall}, MutableContent: 1, Sound: "default"})
	apsVoIP       = apsJSON(apnsAps{})
	apsBackground = apsJSON(apnsAps{ContentAvailable: 1})
)

func apsJSON(a apnsAps) string {
	v, err := json.Marshal(a)
	if err != nil {
		panic(err) // a fixed value of a fixed type
	}
	return `{"aps":` + string(v)
}

// appendJSONString appends s as encoding/json writes a string: plain
// printable ASCII as it is, anything else through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// FCMData builds the data map of an FCM data-only message:
// {"v": "1", "tid": …, "enc": …} (FCM data values are strings).
func FCMData(trackingID string, s Sealed) map[string]string {
	m := map[string]string{"v": "1", "tid": trackingID}
	if s.Enc != "" {
		m["enc"] = s.Enc
	}
	return m
}
