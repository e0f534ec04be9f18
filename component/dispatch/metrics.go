package dispatch

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the dispatcher's Prometheus series (O5, P3). They register on
// the Registerer given to NewMetrics, never on the global registry.
type Metrics struct {
	accepted *prometheus.CounterVec   // provider
	refused  *prometheus.CounterVec   // reason
	attempts *prometheus.CounterVec   // provider, result, status
	final    *prometheus.CounterVec   // provider, outcome, kind
	latency  *prometheus.HistogramVec // provider, outcome, kind
	pending  prometheus.Gauge
	unrouted *prometheus.CounterVec // owner
	// suppressed counts pushes the push switch (O2) kept from their
	// provider, by provider and kind.
	suppressed *prometheus.CounterVec
}

// The kind label of pushes_total and latency_seconds: a call's push and a
// message summary have different stakes (a call rings for 13 s, C4).
const (
	kindCall    = "call"
	kindMessage = "message"
)

// NewMetrics creates and registers the series on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_dispatch_accepted_total", Help: "Pushes accepted by the dispatcher.",
		}, []string{"provider"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_dispatch_refused_total", Help: "Pushes refused at Submit, by reason.",
		}, []string{"reason"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_dispatch_attempts_total", Help: "Provider attempts by result and HTTP status (0: no answer).",
		}, []string{"provider", "result", "status"}),
		final: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_dispatch_pushes_total", Help: "Pushes finished, by final outcome and kind (call family or message).",
		}, []string{"provider", "outcome", "kind"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pushd_dispatch_latency_seconds", Help: "From acceptance to the provider's final answer.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"provider", "outcome", "kind"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushd_dispatch_pending", Help: "Accepted pushes not yet answered.",
		}),
		unrouted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_dispatch_dead_tokens_unrouted_total",
			Help: "Dead tokens whose registration's owner has no hook (Dispatcher.Route): the token was not removed.",
		}, []string{"owner"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_pushes_suppressed_total",
			Help: "Pushes not sent because the push switch (O2) was off, by provider and kind (call family or message).",
		}, []string{"provider", "kind"}),
	}
	for _, c := range []prometheus.Collector{m.accepted, m.refused, m.attempts, m.final, m.latency, m.pending, m.unrouted, m.suppressed} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("dispatch: metrics: %w", err)
		}
	}
	return m, nil
}
