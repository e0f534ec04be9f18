package router

import (
	"crypto/tls"
	"log/slog"
	"time"

	"pushd/internal/redact"
	"pushd/internal/stanza"
)

// Config is everything the router needs to serve one node. cmd/pushd fills
// it from the config file; DefaultConfig documents each default.
type Config struct {
	// Domain is the XMPP domain this node serves (default "localhost").
	Domain string
	// C2SListen is the STARTTLS client listener (default "127.0.0.1:5222";
	// empty disables it).
	C2SListen string
	// TLSListen is the direct-TLS (XEP-0368) client listener (default
	// empty: off).
	TLSListen string
	// ComponentListen is the XEP-0114 listener (default "127.0.0.1:5347";
	// empty disables it).
	ComponentListen string
	// ComponentSecrets maps each component domain allowed to connect to its
	// shared secret.
	ComponentSecrets map[string]string
	// TLS is the server's certificate configuration; nil disables STARTTLS
	// and the direct-TLS listener.
	TLS *tls.Config
	// RequireTLS refuses authentication before STARTTLS (default true).
	RequireTLS bool
	// AllowPlainWithoutTLS offers SASL PLAIN on an unencrypted stream
	// (default false; only meaningful when RequireTLS is false).
	AllowPlainWithoutTLS bool
	// Limits bound every element a peer sends (default 256 KiB, depth 32).
	Limits stanza.Limits
	// RateLimit is the sustained stanzas per second one connection may send
	// (default 2000) and RateBurst the burst above it (default 4000);
	// beyond them the stream ends with policy-violation. RateLimit 0 turns
	// the limit off (benchmarks).
	RateLimit float64
	RateBurst float64
	// MaxAuthAttempts is how many failed SASL exchanges a stream gets
	// before it is closed (default 3).
	MaxAuthAttempts int
	// NegotiationTimeout bounds the time from TCP accept to a bound
	// resource (default 30 s), so idle half-open connections cannot pile up.
	NegotiationTimeout time.Duration
	// WriteTimeout bounds one write to a peer (default 30 s); a peer that
	// does not read is treated as gone.
	WriteTimeout time.Duration
	// ResumeTimeout is how long a detached XEP-0198 stream stays
	// resumable (default 300 s), and PushResumeTimeout the same for a
	// device with push enabled (default 24 h, M10); jsm enforces them,
	// <enabled max=…/> announces the longer (resumeMax).
	ResumeTimeout     time.Duration
	PushResumeTimeout time.Duration
	// RelayKey, in a cluster, lets this node carry the stream of a client
	// whose user another node serves to that node, and accept such streams
	// (relay.go, H7); nil: such a client is sent there with see-other-host.
	// Redirect sends it there even with a key (an operator who wants
	// clients connected to their primary).
	RelayKey []byte
	Redirect bool
	// ResumeLocation, when set, is announced in <enabled location=…/> as
	// the host:port where the client should resume (default empty).
	ResumeLocation string
	// TickInterval is how often the session manager's timers are advanced
	// (default 1 s).
	TickInterval time.Duration
	// AckRequestEvery asks an XEP-0198 client for an ack after this many
	// unacknowledged stanzas (default 5).
	AckRequestEvery int
	// Cluster connects this node to the others (default nil: alone).
	Cluster Cluster
	// Redact turns personal data into log tokens (default: a fresh key).
	Redact *redact.Redactor
	// Metrics receives the router's series (default: unregistered).
	Metrics *Metrics
	// Logger receives the router's logs (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now); tests pass a fake one.
	Now func() time.Time
}

// DefaultConfig returns the router's defaults.
func DefaultConfig() Config {
	return Config{
		Domain:             "localhost",
		C2SListen:          "127.0.0.1:5222",
		ComponentListen:    "127.0.0.1:5347",
		RequireTLS:         true,
		Limits:             stanza.DefaultLimits(),
		RateLimit:          2000,
		RateBurst:          4000,
		MaxAuthAttempts:    3,
		NegotiationTimeout: 30 * time.Second,
		WriteTimeout:       30 * time.Second,
		TickInterval:       time.Second,
		ResumeTimeout:      300 * time.Second,
		PushResumeTimeout:  24 * time.Hour,
		AckRequestEvery:    5,
	}
}
