package router

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the router's Prometheus series (BEHAVIOUR O5).
type Metrics struct {
	connections  *prometheus.GaugeVec
	streams      prometheus.Gauge
	detached     prometheus.Gauge
	stanzasIn    *prometheus.CounterVec
	streamErrors *prometheus.CounterVec
	authFailures prometheus.Counter
	resumes      *prometheus.CounterVec
	publishes    prometheus.Counter
	pushDisabled *prometheus.CounterVec
	relayed      prometheus.Gauge
	carried      prometheus.Counter
}

// NewMetrics registers the router's metrics on reg (nil: unregistered,
// for tests that don't look).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_connections", Help: "Open connections by listener.",
		}, []string{"listener"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushd_streams_bound", Help: "Bound client streams, attached or detached.",
		}),
		detached: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushd_streams_detached", Help: "Client streams waiting for XEP-0198 resumption.",
		}),
		stanzasIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_stanzas_received_total", Help: "Stanzas received from clients and components.",
		}, []string{"kind"}),
		streamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_stream_errors_total", Help: "Streams ended with a stream error, by condition.",
		}, []string{"condition"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushd_auth_failures_total", Help: "Failed SASL exchanges.",
		}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_resumptions_total", Help: "XEP-0198 resumption attempts by result.",
		}, []string{"result"}),
		publishes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushd_push_publishes_total", Help: "XEP-0357 notifications published to app servers.",
		}),
		pushDisabled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_push_disabled_total", Help: "Push registrations removed because the app server refused a publish, by error condition.",
		}, []string{"condition"}),
		relayed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushd_streams_relayed", Help: "Client streams this node carries to the node that serves their user (H7).",
		}),
		carried: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushd_streams_carried_total", Help: "Relayed client streams resumed at their user's new node when the old one went away (H7).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.streams, m.detached, m.stanzasIn, m.streamErrors, m.authFailures, m.resumes, m.publishes, m.pushDisabled, m.relayed, m.carried)
	}
	return m
}
