package component

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// metrics are the component's Prometheus series (O5). A nil Registerer
// gives unregistered series, so the code never checks for nil.
type metrics struct {
	publishes  *prometheus.CounterVec // outcome
	accepted   prometheus.Counter     // publishes{outcome="accepted"}
	commands   *prometheus.CounterVec // command, outcome
	linkUp     prometheus.Gauge
	reconnects prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_component_publishes_total", Help: "XEP-0357 publishes received, by outcome.",
		}, []string{"outcome"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_component_commands_total", Help: "XEP-0050 registration commands completed, by command and outcome.",
		}, []string{"command", "outcome"}),
		linkUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushd_component_link_up", Help: "1 while the XEP-0114 link to the router is up.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushd_component_link_attempts_total", Help: "XEP-0114 connection attempts.",
		}),
	}
	m.accepted = m.publishes.WithLabelValues("accepted")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.publishes, m.commands, m.linkUp, m.reconnects} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("component: metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) publish(outcome string) {
	if outcome == "accepted" {
		m.accepted.Inc() // every push: no label look-up
		return
	}
	m.publishes.WithLabelValues(outcome).Inc()
}
func (m *metrics) command(cmd, outcome string) { m.commands.WithLabelValues(cmd, outcome).Inc() }

// Publishes returns how many publishes ended with outcome ("accepted",
// "item_not_found", "busy", "error", "channel_off"), for tests and the
// operator.
func (c *Component) Publishes(outcome string) int {
	return int(counterValue(c.m.publishes.WithLabelValues(outcome)))
}

func counterValue(c prometheus.Counter) float64 {
	var pb dto.Metric
	if err := c.Write(&pb); err != nil {
		return 0
	}
	return pb.GetCounter().GetValue()
}
