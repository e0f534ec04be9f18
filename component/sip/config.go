package sip

import (
	"crypto/tls"
	"log/slog"
	"net/netip"
	"time"

	"pushd/component/dispatch"
)

// Config holds every knob of the SIP side. Start from DefaultConfig;
// cmd/pushd maps the [sip] section onto it.
type Config struct {
	// Listen is the UDP and TCP address (default 127.0.0.1:5060).
	Listen string
	// TLSListen is the SIP-over-TLS address; empty: none (the default).
	TLSListen string
	TLS       *tls.Config
	// Domain is the SIP domain pushd is the registrar of, and the digest
	// realm (default: the XMPP domain, set by cmd/pushd).
	Domain string
	// Advertise is the host:port phones must REGISTER to after a push: the
	// "node" field of call payloads. Empty: Listen.
	Advertise string
	// RingAfter: no 18x from any device by then, pushd sends 180 Ringing
	// itself (C3, 5 s). GiveUpAfter: no device ringing by then, 480 and a
	// missed-call push (C4, 13 s).
	RingAfter   time.Duration
	GiveUpAfter time.Duration
	// RefreshPushBefore: a binding that has not refreshed this long before
	// it expires gets a reg-refresh push (C8, 120 s).
	RefreshPushBefore time.Duration
	// MinExpires, MaxExpires and DefaultExpires bound registrations
	// (60 s, 3600 s, 3600 s): shorter than the minimum is 423 (RFC 3261
	// §10.3 7), longer is cut down.
	MinExpires     time.Duration
	MaxExpires     time.Duration
	DefaultExpires time.Duration
	// Trusted lists the networks whose INVITEs need no authentication (a
	// PBX trunk). Default none: every INVITE is challenged.
	Trusted []netip.Prefix
	// MaxMessageBytes bounds one SIP message (default 16 KiB; UDP ones are
	// bounded by the datagram anyway).
	MaxMessageBytes int
	// RequestRate and RequestBurst limit requests per source address
	// (S4): a burst, then RequestRate per second. Defaults 50 and 200.
	RequestRate  float64
	RequestBurst float64
	// DigestKey signs digest nonces. Nodes of a cluster share it so that
	// a phone's nonce from one is good at another (cmd/pushd derives it
	// from the cluster secret). Empty: a random key per process.
	DigestKey []byte
	// DigestAlgorithms are challenged with in this order: "SHA-256" and
	// "MD5" (default both, SHA-256 first, RFC 8760). Put MD5 first for
	// phones that answer only the first challenge and know only MD5.
	DigestAlgorithms []string
	// Providers are the push providers this node can send through: the
	// ones a pn-provider may name (C1).
	Providers []dispatch.ProviderName
	// Placement says whether this node serves aor's user (in a cluster,
	// its primary) and the SIP address of the node that does: call pushes
	// name it as the node to register to, and only the serving node sends
	// an AOR's refresh pushes. Nil: this node serves everyone.
	Placement func(aor string) (self bool, addr string)
	// Now is the clock (tests inject a fake one).
	Now    func() time.Time
	Logger *slog.Logger
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Listen:            "127.0.0.1:5060",
		RingAfter:         5 * time.Second,
		GiveUpAfter:       13 * time.Second,
		RefreshPushBefore: 120 * time.Second,
		MinExpires:        60 * time.Second,
		MaxExpires:        3600 * time.Second,
		DefaultExpires:    3600 * time.Second,
		MaxMessageBytes:   16 << 10,
		RequestRate:       50,
		RequestBurst:      200,
		Now:               time.Now,
	}
}

func (c *Config) fill() {
	def := DefaultConfig()
	if c.Listen == "" {
		c.Listen = def.Listen
	}
	if c.RingAfter <= 0 {
		c.RingAfter = def.RingAfter
	}
	if c.GiveUpAfter <= 0 {
		c.GiveUpAfter = def.GiveUpAfter
	}
	if c.RefreshPushBefore <= 0 {
		c.RefreshPushBefore = def.RefreshPushBefore
	}
	if c.MinExpires <= 0 {
		c.MinExpires = def.MinExpires
	}
	if c.MaxExpires <= 0 {
		c.MaxExpires = def.MaxExpires
	}
	if c.DefaultExpires <= 0 {
		c.DefaultExpires = def.DefaultExpires
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = def.MaxMessageBytes
	}
	if c.RequestRate <= 0 {
		c.RequestRate = def.RequestRate
	}
	if c.RequestBurst <= 0 {
		c.RequestBurst = def.RequestBurst
	}
	if c.Now == nil {
		c.Now = def.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Advertise == "" {
		c.Advertise = c.Listen
	}
}
