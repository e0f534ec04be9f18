package dispatch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"pushd/component/payload"
)

// ProviderName names a push provider. A Registration's provider picks the
// Provider a push goes to.
type ProviderName string

// Providers pushd knows.
const (
	APNS ProviderName = "apns"
	FCM  ProviderName = "fcm"
)

// Registration is the part of a device's push registration the dispatcher
// needs. ID is the registry's opaque handle (never a JID): it is what
// DeadToken hands back so the registry changes the right record.
type Registration struct {
	ID        string       `json:"id"`
	Provider  ProviderName `json:"provider"`
	Token     string       `json:"token"`
	VoIPToken string       `json:"voip_token,omitempty"`
	// Region "CN": no CallKit, calls go on the message channel (C7).
	Region string `json:"region,omitempty"`
	// LegacySingleChannel: iOS 12 devices with one channel for all (C7).
	LegacySingleChannel bool `json:"legacy_single_channel,omitempty"`
	// Key is the device's AES-256 key; nil means content-free wake-ups. It
	// is never persisted by the dispatcher (json:"-").
	Key *[payload.KeySize]byte `json:"-"`
}

// ChannelFor picks the channel for a push of type t (BEHAVIOUR C2, C7):
// calls go on the VoIP channel when the device has one, except in region
// CN and on legacy single-channel devices; everything else on the message
// channel.
func (r Registration) ChannelFor(t payload.Type) payload.Channel {
	if t.IsCall() && r.Provider == APNS && r.VoIPToken != "" && r.Region != "CN" && !r.LegacySingleChannel {
		return payload.ChannelVoIP
	}
	return payload.ChannelMessage
}

// TokenFor returns the provider token for channel ch.
func (r Registration) TokenFor(ch payload.Channel) string {
	if ch == payload.ChannelVoIP && r.VoIPToken != "" {
		return r.VoIPToken
	}
	return r.Token
}

// Job is what a caller (component, component/sip) hands to Submit.
type Job struct {
	// TrackingID identifies the push end to end; Submit generates one when
	// empty. A tracking id is sent at most once (P5): one Submit generates
	// needs no look-up among the answered ones, so leave it empty unless
	// the caller must know the id before Submit.
	TrackingID   string
	Registration Registration
	// Channel; empty means Registration.ChannelFor(Payload.Type).
	Channel payload.Channel
	// Payload is the plaintext summary; sealed under Registration.Key before
	// the job is persisted, stripped when there is no key.
	Payload payload.Payload
	// Encrypted is a router-encrypted payload to pass through untouched.
	Encrypted string
}

// Push is an accepted job as persisted and as handed to a Provider: no
// plaintext, no key.
type Push struct {
	TrackingID   string          `json:"tid"`
	Registration Registration    `json:"reg"`
	Channel      payload.Channel `json:"channel"`
	Sealed       payload.Sealed  `json:"sealed"`
	Accepted     time.Time       `json:"accepted"`
	Attempts     int             `json:"attempts"`
	// fresh (in memory only): Submit made the tracking id up, so no
	// caller can submit it again and its answer needs no record (P5).
	fresh bool
}

// DeviceToken is the provider token this push goes to.
func (p Push) DeviceToken() string { return p.Registration.TokenFor(p.Channel) }

// Result is the class of a provider's answer.
type Result int

// Results, in the order they are tested by the dispatcher.
const (
	// Delivered: the provider accepted the push.
	Delivered Result = iota
	// Dead: the token is invalid or unregistered; the registration goes.
	Dead
	// Retry: 429, 5xx, timeout or connection trouble; try again on a fresh
	// connection after a backoff.
	Retry
	// Fatal: the provider refused the request itself (other 4xx, bad
	// credentials); retrying the same request cannot help.
	Fatal
)

func (r Result) String() string {
	switch r {
	case Delivered:
		return "delivered"
	case Dead:
		return "dead_token"
	case Retry:
		return "retry"
	case Fatal:
		return "fatal"
	}
	return fmt.Sprintf("result(%d)", int(r))
}

// Outcome is a provider's answer to one attempt. Status and Reason are the
// provider's (e.g. 410 "Unregistered", 404 "UNREGISTERED"); they carry no
// personal data and are logged. Err is the transport error, if any; its
// text must not contain the device token (providers strip URLs).
type Outcome struct {
	Result Result
	Status int
	Reason string
	Err    error
}

// Provider sends one push and classifies the answer. Implementations must
// be safe for concurrent use: the dispatcher runs several workers per
// provider.
type Provider interface {
	// Send makes one attempt. ctx carries the per-attempt timeout.
	Send(ctx context.Context, p Push) Outcome
	// Reset drops pooled connections so the next Send dials afresh (P3:
	// retries go on a fresh connection, and after a timeout to the next
	// address, P4).
	Reset()
}

// DeadToken is a provider's verdict that one token of a registration is
// invalid or unregistered (P3). A registration has a token per channel, so
// the verdict names the channel and the token that failed: a dead VoIP
// token leaves the message channel working.
type DeadToken struct {
	// Registration is as the push carried it (no key).
	Registration Registration
	// Channel is the channel the push went on.
	Channel payload.Channel
	// Token is the token that failed, Registration.TokenFor(Channel).
	Token string
}

// DeadTokenHook is told when a provider declared a token dead, so the
// registry drops it: a dead message token removes the registration (the
// router gets item-not-found on its next publish), a dead VoIP token only
// that token. Called from a worker goroutine; must be safe for concurrent
// use and should not block for long.
type DeadTokenHook interface {
	DeadToken(ctx context.Context, dead DeadToken) error
}

// NewTrackingID returns a random UUID v4: APNS accepts it as apns-id, so the
// tracking id shows up on Apple's side as well.
func NewTrackingID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	// Every push gets one: hex by hand, not fmt, keeps it to one allocation.
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], b[10:16])
	return string(s[:])
}
