package dispatch

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"pushd/component/payload"
)

// Config holds every dispatcher knob. Start from DefaultConfig and change
// fields; cmd/pushd maps TOML and flags onto it.
type Config struct {
	// Workers is the number of concurrent sends per provider. Default 16:
	// APNS and FCM multiplex over HTTP/2, so a few connections' worth of
	// streams keeps latency low without opening many sockets.
	Workers int
	// MaxPending bounds accepted-but-unanswered pushes (all providers).
	// Submit returns ErrBusy past it, which the component maps to
	// wait/resource-constraint. Default 100 000.
	MaxPending int
	// AttemptTimeout is how long one attempt may wait for the provider's
	// answer before it is retried on a fresh connection to the next address
	// (P4: 5 s).
	AttemptTimeout time.Duration
	// MaxAttempts and MaxAge end retrying (P3): after that many attempts, or
	// once the push is that old, it is dropped with outcome "expired" and an
	// error log line. Defaults 10 attempts, 1 h (the message summary is
	// stale by then; the queue still holds the messages, M5).
	MaxAttempts int
	MaxAge      time.Duration
	// CallMaxAge is MaxAge for a push that rings a phone (payload.TypeCall):
	// past the call's 13 s ring window (C4) it only confuses, and the SIP
	// side, told through Job.Done, answers the caller early. A push is
	// also given up when its next attempt would come after its max age.
	// Default 10 s: with P4's 5 s attempt timeout, two attempts.
	CallMaxAge time.Duration
	// BackoffBase and BackoffMax shape the exponential backoff between
	// attempts: base·2^(n-1) capped at max, then jittered to between half
	// and all of it so retries of many pushes spread out. Defaults 500 ms,
	// 60 s.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// ResetInterval: at most one connection reset per provider per
	// interval, so a burst of failures reconnects once, not once per push.
	// Default 1 s.
	ResetInterval time.Duration
	// CoalesceWindow: at most one message-channel push per device per
	// window (M3, push_coalesce, default 2 s). A push arriving inside the
	// window is held; a newer one replaces the held one (it carries the
	// newer summary; the replaced one ends as "coalesced"). Calls are
	// never coalesced, on the VoIP channel or on the message channel
	// (C2, C7): each call matters.
	CoalesceWindow time.Duration
	// DeviceRate and DeviceBurst rate-limit every channel per device: a
	// burst, then one push per DeviceRate. Pushes over the limit are
	// delayed, never dropped. Defaults 10 and 1 s.
	DeviceBurst int
	DeviceRate  time.Duration
	// DoneTTL is how long an answered tracking id is remembered, so a
	// resubmission is refused (P5: at most once). Ids Submit made up are
	// not remembered: nobody else can submit them. Default 24 h.
	DoneTTL time.Duration

	// Now, Sleep and Jitter are the clock: tests inject them so backoff
	// and coalescing need no real waiting. Sleep returns ctx.Err() if ctx
	// ends first. Jitter returns a number in [0, 1).
	Now    func() time.Time
	Sleep  func(ctx context.Context, d time.Duration) error
	Jitter func() float64
	// Logger receives one line per attempt and per final outcome, each
	// with the tracking id. Default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Workers:        16,
		MaxPending:     100_000,
		AttemptTimeout: 5 * time.Second,
		MaxAttempts:    10,
		MaxAge:         time.Hour,
		CallMaxAge:     10 * time.Second,
		BackoffBase:    500 * time.Millisecond,
		BackoffMax:     60 * time.Second,
		ResetInterval:  time.Second,
		CoalesceWindow: 2 * time.Second,
		DeviceBurst:    10,
		DeviceRate:     time.Second,
		DoneTTL:        24 * time.Hour,
		Now:            time.Now,
		Sleep:          sleep,
		Jitter:         rand.Float64,
	}
}

func (c *Config) fill() {
	def := DefaultConfig()
	if c.Workers <= 0 {
		c.Workers = def.Workers
	}
	if c.MaxPending <= 0 {
		c.MaxPending = def.MaxPending
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = def.AttemptTimeout
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = def.MaxAttempts
	}
	if c.MaxAge <= 0 {
		c.MaxAge = def.MaxAge
	}
	if c.CallMaxAge <= 0 {
		c.CallMaxAge = def.CallMaxAge
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = def.BackoffBase
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = def.BackoffMax
	}
	if c.DeviceBurst <= 0 {
		c.DeviceBurst = def.DeviceBurst
	}
	if c.DeviceRate <= 0 {
		c.DeviceRate = def.DeviceRate
	}
	if c.DoneTTL <= 0 {
		c.DoneTTL = def.DoneTTL
	}
	if c.Now == nil {
		c.Now = def.Now
	}
	if c.Sleep == nil {
		c.Sleep = def.Sleep
	}
	if c.Jitter == nil {
		c.Jitter = def.Jitter
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// maxAge is how old p may get before it is given up.
func (c *Config) maxAge(p *Push) time.Duration {
	if p.Sealed.Type == payload.TypeCall {
		return min(c.MaxAge, c.CallMaxAge)
	}
	return c.MaxAge
}

// backoff returns the wait before attempt n+1 after n failed attempts.
func (c *Config) backoff(n int) time.Duration {
	d := c.BackoffBase
	for i := 1; i < n && d < c.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.BackoffMax)
	return d/2 + time.Duration(c.Jitter()*float64(d/2))
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
