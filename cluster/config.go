package cluster

import (
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Config is everything a node needs to take part in the cluster. cmd/pushd
// fills it from the [cluster] section and flags; start from DefaultConfig,
// which documents every default and why. New takes the default for a zero
// duration or count; ports are taken as given (0 picks a free port, for
// tests and several nodes on one host).
type Config struct {
	// NodeName is unique in the cluster and stable across restarts: it is
	// what placement hashes (default: the host name). A restarted node
	// must come back under the same name to get its users back (H6).
	NodeName string

	// BindAddr and BindPort are where memberlist listens, UDP and TCP
	// (default 0.0.0.0:7946, DESIGN's cluster port).
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what other nodes use to reach
	// this one when it differs from the bind address (NAT, containers);
	// empty/0: memberlist picks the first private address and the bound
	// port.
	AdvertiseAddr string
	AdvertisePort int
	// ReplicationPort is the TCP port of the replication listener, on
	// BindAddr (default 7947). Its advertised address goes to the others
	// in NodeMeta.ClusterAddr.
	ReplicationPort int
	// ForwardPort is the TCP port, on BindAddr, of the listener for
	// stanzas other nodes forward here (default 0: any free port; it is
	// advertised in NodeMeta.ForwardAddr).
	ForwardPort int

	// Join lists host:port of members to join at start (default none: a
	// new cluster of one). New retries in the background until one
	// answers, so a node restarted alone finds its peers by itself (H6).
	Join []string

	// SecretKey (16, 24 or 32 bytes) encrypts gossip and authenticates and
	// seals replication (default none: cleartext, with a warning logged).
	SecretKey []byte
	// Label keeps clusters sharing a network apart: memberlist drops
	// packets with another label, and replication refuses the handshake
	// (default "pushd").
	Label string

	// ProbeInterval is how often each node probes one random peer
	// (default 500 ms; memberlist's LAN default is 1 s). Half the LAN
	// default halves the time to notice a crash, for H3, at 2 probe
	// packets per node per second: nothing on a LAN.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct probe waits for its ack before
	// the indirect probes (default 250 ms; LAN default 500 ms). A LAN
	// round trip is well under 1 ms; 250 ms still absorbs GC pauses.
	ProbeTimeout time.Duration
	// SuspicionMult sets how long a suspect has to refute before it is
	// declared dead: SuspicionMult × max(1, log10(N)) × ProbeInterval
	// once enough peers confirm the suspicion (default 3; LAN default 4):
	// 1.5 s at 3–10 nodes, 3 s at 100.
	SuspicionMult int
	// SuspicionMaxTimeoutMult bounds the timeout while peers have not yet
	// confirmed, as a multiple of the above (default 2; LAN default 6,
	// which alone would make an unconfirmed suspicion last 9 s at 3 nodes
	// and break H3's budget).
	SuspicionMaxTimeoutMult int
	// GossipInterval is how often gossip (suspect/dead/alive messages)
	// goes out to GossipNodes random peers (default 200 ms and 3, as
	// memberlist's LAN defaults: a death reaches every node of 100 in
	// about log3(100) ≈ 4–5 rounds, 1 s).
	GossipInterval time.Duration
	GossipNodes    int
	// PushPullInterval is the period of full state syncs that repair
	// missed gossip (default 15 s; LAN default 30 s).
	PushPullInterval time.Duration
	// DeadNodeReclaimTime lets a dead node's name come back from another
	// address after this long (default 10 s: a restarted container may get
	// a new IP, H6).
	DeadNodeReclaimTime time.Duration
	// LeaveTimeout bounds Leave's broadcasts (default 2 s).
	LeaveTimeout time.Duration
	// RejoinInterval is the first delay between background attempts to
	// reach Join when none answered (default 1 s, doubling to 30 s).
	RejoinInterval time.Duration

	// Meta is what this node tells the others (C2SAddr, AdminAddr, Build).
	// ClusterAddr and Started are filled by New when empty.
	Meta NodeMeta

	// Replication configures the sending and receiving of records (see
	// DefaultReplicatorConfig); Name, Logger and Metrics are filled by New.
	Replication ReplicatorConfig
	// Transport replaces the TCP replication transport (tests: a
	// MemNetwork's). Its node names must be the member names.
	Transport Transport

	Logger  *slog.Logger // default slog.Default()
	Metrics *Metrics     // default unregistered
}

// DefaultConfig returns the defaults documented on Config, tuned for H3:
// with 3 nodes on a LAN a crashed member is declared dead in about 2–3 s
// (measured: see docs/scaling.md).
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:                host,
		BindAddr:                "0.0.0.0",
		BindPort:                7946,
		ReplicationPort:         7947,
		Label:                   "pushd",
		ProbeInterval:           500 * time.Millisecond,
		ProbeTimeout:            250 * time.Millisecond,
		SuspicionMult:           3,
		SuspicionMaxTimeoutMult: 2,
		GossipInterval:          200 * time.Millisecond,
		GossipNodes:             3,
		PushPullInterval:        15 * time.Second,
		DeadNodeReclaimTime:     10 * time.Second,
		LeaveTimeout:            2 * time.Second,
		RejoinInterval:          time.Second,
		Replication:             DefaultReplicatorConfig(),
	}
}

// fill applies defaults to zero fields and checks the rest.
func (c *Config) fill() error {
	def := DefaultConfig()
	if c.NodeName == "" {
		c.NodeName = def.NodeName
	}
	if c.NodeName == "" {
		return fmt.Errorf("cluster: no node name")
	}
	if c.BindAddr == "" {
		c.BindAddr = def.BindAddr
	}
	if n := len(c.SecretKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("cluster: secret key of %d bytes, want 16, 24 or 32", n)
	}
	durs := []struct {
		p *time.Duration
		d time.Duration
	}{
		{&c.ProbeInterval, def.ProbeInterval}, {&c.ProbeTimeout, def.ProbeTimeout},
		{&c.GossipInterval, def.GossipInterval}, {&c.PushPullInterval, def.PushPullInterval},
		{&c.DeadNodeReclaimTime, def.DeadNodeReclaimTime}, {&c.LeaveTimeout, def.LeaveTimeout},
		{&c.RejoinInterval, def.RejoinInterval},
	}
	for _, f := range durs {
		if *f.p <= 0 {
			*f.p = f.d
		}
	}
	if c.SuspicionMult <= 0 {
		c.SuspicionMult = def.SuspicionMult
	}
	if c.SuspicionMaxTimeoutMult <= 0 {
		c.SuspicionMaxTimeoutMult = def.SuspicionMaxTimeoutMult
	}
	if c.GossipNodes <= 0 {
		c.GossipNodes = def.GossipNodes
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		return fmt.Errorf("cluster: probe timeout %v must be shorter than the probe interval %v", c.ProbeTimeout, c.ProbeInterval)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
	if _, err := c.Meta.Encode(); err != nil {
		return err
	}
	return nil
}
