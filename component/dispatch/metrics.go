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
	final    *prometheus.CounterVec   // provider, outcome
	latency  *prometheus.HistogramVec // provider, outcome
	pending  prometheus.Gauge
}

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
			Name: "pushd_dispatch_pushes_total", Help: "Pushes finished, by final outcome.",
		}, []string{"provider", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pushd_dispatch_latency_seconds", Help: "From acceptance to the provider's final answer.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"provider", "outcome"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushd_dispatch_pending", Help: "Accepted pushes not yet answered.",
		}),
	}
	for _, c := range []prometheus.Collector{m.accepted, m.refused, m.attempts, m.final, m.latency, m.pending} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("dispatch: metrics: %w", err)
		}
	}
	return m, nil
}
