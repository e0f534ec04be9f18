package cluster

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the cluster's Prometheus series (BEHAVIOUR O5). The zero
// value is not usable; NewMetrics(nil) gives unregistered series.
type Metrics struct {
	members       *prometheus.GaugeVec
	memberEvents  *prometheus.CounterVec
	recordsSent   prometheus.Counter
	bytesSent     prometheus.Counter
	recordsAcked  prometheus.Counter
	resent        prometheus.Counter
	recordsIn     prometheus.Counter
	applyErrors   prometheus.Counter
	unacked       *prometheus.GaugeVec
	degraded      *prometheus.CounterVec
	degradedPeers prometheus.Gauge
}

// NewMetrics creates the series and registers them with reg unless nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_cluster_members", Help: "Cluster members by state, as this node sees them.",
		}, []string{"state"}),
		memberEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_cluster_member_events_total", Help: "Membership changes seen, by kind (joined, left, failed, updated).",
		}, []string{"event"}),
		recordsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushd_cluster_replication_records_sent_total", Help: "Records handed to the replication channel.",
		}),
		bytesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushd_cluster_replication_bytes_sent_total", Help: "Encoded bytes handed to the replication channel.",
		}),
		recordsAcked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushd_cluster_replication_records_acked_total", Help: "Records acknowledged by their backup.",
		}),
		resent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushd_cluster_replication_frames_resent_total", Help: "Frames sent again after a reconnect.",
		}),
		recordsIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushd_cluster_replication_records_applied_total", Help: "Records applied as a backup.",
		}),
		applyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushd_cluster_replication_apply_errors_total", Help: "Records the local Applier failed to apply.",
		}),
		unacked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_cluster_replication_unacked_records", Help: "Records sent to a peer and not yet acknowledged.",
		}, []string{"peer"}),
		degraded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_cluster_replication_degraded_total", Help: "Sends acknowledged local-durable only (DESIGN rule 2), by reason.",
		}, []string{"reason"}),
		degradedPeers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushd_cluster_replication_degraded", Help: "1 while some replication is local-durable only (no backup, or a backup not acknowledging).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.members, m.memberEvents, m.recordsSent, m.bytesSent, m.recordsAcked, m.resent,
			m.recordsIn, m.applyErrors, m.unacked, m.degraded, m.degradedPeers)
	}
	return m
}
