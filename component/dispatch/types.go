package dispatch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync/atomic"
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
// needs. ID is the owner's opaque handle (never a JID): it is what
// DeadToken hands back so the owner changes the right record.
type Registration struct {
	ID string `json:"id"`
	// Owner names who keeps this registration, so that a dead token goes
	// back to it and no one else (Dispatcher.Route): OwnerComponent ("")
	// is the XMPP component's device registry, OwnerSIP the SIP registrar.
	// A SIP binding and an XMPP registration of one phone may share their
	// tokens; each owner drops its own record only.
	Owner     string       `json:"owner,omitempty"`
	Provider  ProviderName `json:"provider"`
	Token     string       `json:"token"`
	VoIPToken string       `json:"voip_token,omitempty"`
	// Region "CN": no CallKit, calls go on the message channel (C7).
	Region string `json:"region,omitempty"`
	// LegacySingleChannel: iOS 12 devices with one channel for all (C7).
	LegacySingleChannel bool `json:"legacy_single_channel,omitempty"`
	// Topic is the app's APNS bundle id when it is not the provider's
	// configured one: a SIP phone names its app in pn-param (RFC 8599),
	// and one node serves several apps. Empty: the provider's.
	Topic string `json:"topic,omitempty"`
	// Key is the device's AES-256 key; nil means content-free wake-ups. It
	// is never persisted by the dispatcher (json:"-").
	Key *[payload.KeySize]byte `json:"-"`
}

// Owners of registrations (Registration.Owner).
const (
	OwnerComponent = ""
	OwnerSIP       = "sip"
)

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
	// Done, when set, is told once how the push ended (a call needs to
	// know at once that its push failed, to answer the caller early). It
	// is called exactly once for a job Submit accepted (returned nil for):
	// delivered, dead token, expired, fatal, coalesced or disabled, after that end
	// is committed. It is not called when Submit returns an error (the
	// caller already knows), nor for a push still pending when the
	// dispatcher closes: that push resumes at the next start without a
	// Done (functions are not persisted), and the producer's own timers
	// must cover it. It may be called before Submit returns, never on the
	// goroutine that called Submit: it runs on the provider's worker,
	// which sends nothing else meanwhile, so it must not block (hand the
	// Final to the producer's own goroutine or a buffered channel).
	Done func(Final)
}

// Final is how a push ended, as Job.Done hears it.
type Final struct {
	TrackingID string
	// Outcome is one of "delivered", "dead_token" (the token is gone; its
	// owner's hook was told first), "expired" (retries gave up: MaxAttempts,
	// MaxAge or CallMaxAge), "fatal" (the provider refused the request),
	// "coalesced" (a newer message push to the device replaced it) and
	// "disabled" (the push switch is off, O2: never sent, and the token is
	// not in question — keep the registration) — the outcome label of
	// pushd_dispatch_pushes_total (a push refused at Submit while the
	// switch is off is counted only in pushd_pushes_suppressed_total).
	Outcome string
	// Result, Status and Reason are the last provider answer's (Status 0:
	// no HTTP answer). A coalesced push was never sent: Result Retry,
	// Status 0; so is a push the switch held back.
	Result Result
	Status int
	Reason string
}

// Delivered reports whether the provider accepted the push.
func (f Final) Delivered() bool { return f.Outcome == outcomeDelivered }

// Final outcomes (Final.Outcome, the outcome label of the metrics).
const (
	outcomeDelivered = "delivered"
	outcomeDead      = "dead_token"
	outcomeExpired   = "expired"
	outcomeFatal     = "fatal"
	outcomeCoalesced = "coalesced"
	outcomeDisabled  = "disabled"
)

// Disabled reports whether the push was not sent because the push switch
// was off (O2): not a failure of the device's token.
func (f Final) Disabled() bool { return f.Outcome == outcomeDisabled }

// Push is an accepted job as persisted and as handed to a Provider: no
// plaintext, no key.
type Push struct {
	TrackingID   string          `json:"tid"`
	Registration Registration    `json:"reg"`
	Channel      payload.Channel `json:"channel"`
	Sealed       payload.Sealed  `json:"sealed"`
	Accepted     time.Time       `json:"accepted"`
	Attempts     int             `json:"attempts"`
	// In memory only:
	// fresh: Submit made the tracking id up, so no caller can submit it
	// again and its answer needs no record (P5).
	fresh bool
	// coalesced: replaced by a newer push while held; the worker that
	// takes it ends it without sending.
	coalesced bool
	// notify is the producer's Job.Done (nil: none, and after a restart).
	notify *notify
}

// notify carries a job's Done until its push ends.
type notify struct {
	done func(Final)
	// stored is set by the committer once the push's record committed,
	// i.e. once Submit will return nil: a push Submit refused (its record
	// failed after it was routed) ends without a Done.
	stored atomic.Bool
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
// registration's owner drops it: for the component's registry a dead
// message token removes the registration (the router gets item-not-found
// on its next publish), a dead VoIP token only that token. Each owner has
// its own hook (Deps.DeadToken for "", Dispatcher.Route for others) and
// hears only of its own registrations. Called from a worker goroutine
// before the push ends; must be safe for concurrent use and should not
// block for long.
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
