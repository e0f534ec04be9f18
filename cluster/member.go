package cluster

import (
	"encoding/json"
	"fmt"
	"time"
)

// State is a member's state as this node sees it.
type State uint8

const (
	// StateAlive: the member answers probes.
	StateAlive State = iota
	// StateSuspect: this node's probes of the member failed; memberlist
	// declares it dead unless it refutes within the suspicion timeout. A
	// suspect member keeps its users (placement counts it as live), so a
	// short pause does not move anyone.
	StateSuspect
	// StateDead: memberlist declared the member failed. Its users have
	// moved to their backups.
	StateDead
	// StateLeft: the member left gracefully (Leave).
	StateLeft
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText makes State appear as its name in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a State's name.
func (s *State) UnmarshalText(b []byte) error {
	for c := StateAlive; c <= StateLeft; c++ {
		if c.String() == string(b) {
			*s = c
			return nil
		}
	}
	return fmt.Errorf("cluster: unknown member state %q", b)
}

// Live reports whether a member in this state holds users (alive or
// suspect).
func (s State) Live() bool { return s == StateAlive || s == StateSuspect }

// Member is one node of the cluster as this node sees it.
type Member struct {
	Name  string
	Addr  string // memberlist gossip address, host:port
	State State
	Meta  NodeMeta
	// Since is when this node saw the member enter State.
	Since time.Time
}

// MarshalJSON gives a Member a stable, lower-case JSON form.
func (m Member) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name        string    `json:"name"`
		Addr        string    `json:"addr"`
		State       State     `json:"state"`
		C2SAddr     string    `json:"c2s_addr,omitempty"`
		ClusterAddr string    `json:"cluster_addr,omitempty"`
		AdminAddr   string    `json:"admin_addr,omitempty"`
		Build       string    `json:"build,omitempty"`
		Since       time.Time `json:"since"`
	}{m.Name, m.Addr, m.State, m.Meta.C2SAddr, m.Meta.ClusterAddr, m.Meta.AdminAddr, m.Meta.Build, m.Since})
}
