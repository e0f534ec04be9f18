package sip

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// sourceLimiter is a token bucket per source address (S4): one flooding
// phone or scanner is refused with 503 while the others are served. Its
// map is bounded: idle sources are dropped, and past maxSources the
// oldest go first.
type sourceLimiter struct {
	rate, burst float64
	mu          sync.Mutex
	buckets     map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

const maxSources = 1 << 16

func newSourceLimiter(rate, burst float64) *sourceLimiter {
	return &sourceLimiter{rate: rate, burst: burst, buckets: map[string]*bucket{}}
}

func (l *sourceLimiter) allow(source string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[source]
	if b == nil {
		if len(l.buckets) >= maxSources {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[source] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// evict drops the buckets that are full again (their sources idle), or
// half of them if none is.
func (l *sourceLimiter) evict(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < maxSources/2 {
			break
		}
		delete(l.buckets, k)
	}
}

// Metrics are the SIP side's Prometheus series (O5).
type Metrics struct {
	requests *prometheus.CounterVec // what
	pushes   *prometheus.CounterVec // type, outcome
	calls    *prometheus.CounterVec // outcome
}

// NewMetrics registers the series on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_sip_requests_total", Help: "SIP requests handled, by what became of them.",
		}, []string{"what"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_sip_pushes_total", Help: "Call and refresh pushes submitted to the dispatcher, by type and outcome.",
		}, []string{"type", "outcome"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_sip_call_answers_total", Help: "Final answers pushd gave callers, by code class.",
		}, []string{"code"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.pushes, m.calls)
	}
	return m
}

func tlsListen(addr string, cfg *tls.Config) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(l, cfg), nil
}

// quiet is sipgo's logger: its own lines carry whole messages (numbers,
// names), so only warnings and errors of it reach the node's log, and
// those without the message text.
func quiet(l *slog.Logger) *slog.Logger {
	if l == nil {
		l = slog.Default()
	}
	return slog.New(&levelFloor{h: l.Handler(), min: slog.LevelWarn})
}

type levelFloor struct {
	h   slog.Handler
	min slog.Level
}

func (f *levelFloor) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.h.Enabled(ctx, l)
}

func (f *levelFloor) Handle(ctx context.Context, r slog.Record) error {
	// Attributes of sipgo's lines may hold a whole message: keep only
	// the line and the error.
	out := slog.NewRecord(r.Time, r.Level, "sipgo: "+r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" || a.Key == "err" {
			if namesSomeone(a.Value.String()) {
				a.Value = slog.StringValue("(withheld: it quotes the message)")
			}
			out.AddAttrs(a)
		}
		return true
	})
	return f.h.Handle(ctx, out)
}

// namesSomeone reports whether an error of sipgo's quotes part of a
// message (a URI, a start line, a header value), which may name a user
// or number (S3).
func namesSomeone(s string) bool {
	return strings.ContainsAny(s, "@'\"<") || strings.Contains(s, "sip:") || strings.Contains(s, "sips:") || strings.Contains(s, "tel:")
}

func (f *levelFloor) WithAttrs([]slog.Attr) slog.Handler { return f }
func (f *levelFloor) WithGroup(string) slog.Handler      { return f }
