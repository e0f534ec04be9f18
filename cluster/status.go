package cluster

import (
	"iter"
	"slices"
	"strings"
	"time"
)

// Status is a node's view of the cluster, for `pushd cluster status
// --json` and the admin API. It marshals to stable lower-case JSON.
type Status struct {
	Node    string   `json:"node"`
	Members []Member `json:"members"`
	// Roles is nil when Status was not given the user list.
	Roles *Roles `json:"roles,omitempty"`
	// Replication is the outbound lag towards each peer this node sends to.
	Replication []PeerLag `json:"replication"`
	// Inbound is what this node holds as a backup, per sender.
	Inbound []InboundStat `json:"inbound"`
	// Degraded: some replication is local-durable only right now.
	Degraded bool `json:"degraded"`
}

// Roles counts the users this node is primary and backup for.
type Roles struct {
	Users   int `json:"users"`
	Primary int `json:"primary"`
	Backup  int `json:"backup"`
}

// PeerLag is the replication lag towards one peer.
type PeerLag struct {
	Peer      string `json:"peer"`
	Connected bool   `json:"connected"`
	// UnackedRecords / UnackedBytes are sent (or queued) and not yet
	// acknowledged; OldestUnackedMS is the age of the oldest of them.
	UnackedRecords  int     `json:"unacked_records"`
	UnackedBytes    int     `json:"unacked_bytes"`
	OldestUnackedMS float64 `json:"oldest_unacked_ms"`
	Degraded        bool    `json:"degraded"`
	AckedRecords    uint64  `json:"acked_records"`
	ResentFrames    uint64  `json:"resent_frames"`
}

// InboundStat is what one sender replicated to this node.
type InboundStat struct {
	Peer           string `json:"peer"`
	AppliedRecords uint64 `json:"applied_records"`
	AppliedFrames  uint64 `json:"applied_frames"`
}

// Lag reports the outbound replication lag per peer, sorted by peer.
func (r *Replicator) Lag() []PeerLag {
	r.mu.Lock()
	links := make([]*link, 0, len(r.links))
	for _, l := range r.links {
		links = append(links, l)
	}
	r.mu.Unlock()
	now := time.Now()
	out := make([]PeerLag, 0, len(links))
	for _, l := range links {
		l.mu.Lock()
		pl := PeerLag{
			Peer:           l.peer,
			Connected:      l.connected,
			UnackedRecords: l.records,
			UnackedBytes:   l.bytes,
			Degraded:       l.degraded,
			AckedRecords:   l.acked,
			ResentFrames:   l.resent,
		}
		if len(l.pending) > 0 {
			pl.OldestUnackedMS = float64(now.Sub(l.pending[0].at).Microseconds()) / 1000
		}
		l.mu.Unlock()
		out = append(out, pl)
	}
	slices.SortFunc(out, func(a, b PeerLag) int { return strings.Compare(a.Peer, b.Peer) })
	return out
}

// Inbound reports what each sender replicated to this node.
func (r *Replicator) Inbound() []InboundStat {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]InboundStat, 0, len(r.inbound))
	for peer, st := range r.inbound {
		out = append(out, InboundStat{Peer: peer, AppliedRecords: st.records.Load(), AppliedFrames: st.frames.Load()})
	}
	slices.SortFunc(out, func(a, b InboundStat) int { return strings.Compare(a.Peer, b.Peer) })
	return out
}

// Degraded reports whether some replication is local-durable only now.
func (r *Replicator) Degraded() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.degradedN > 0
}

// CountRoles counts, over users, those whose primary and whose backup is
// node under p.
func CountRoles(p *Placement, node string, users iter.Seq[string]) Roles {
	var r Roles
	if users == nil {
		return r
	}
	for u := range users {
		r.Users++
		pr, bk := p.PrimaryBackup(u)
		if pr == node {
			r.Primary++
		} else if bk == node {
			r.Backup++
		}
	}
	return r
}
