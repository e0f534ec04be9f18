package cluster

import (
	"slices"
)

// Placement maps each user to a primary and a backup node by rendezvous
// (highest random weight) hashing over a fixed set of node names. It is an
// immutable snapshot: Cluster.Placement returns a new one whenever the set
// of live members changes, so a caller that holds one sees a consistent
// view for as long as it keeps it. Safe for concurrent use.
//
// What the caller may assume:
//   - The same set of names gives the same answer on every node, in every
//     process, whatever order the names came in (the hash is fixed: FNV-1a
//     of the user, finalised with SplitMix64 against a per-node seed).
//   - Adding one node moves to it about 1/(N+1) of the primaries and
//     changes no other user's primary; removing one node moves only the
//     users whose primary or backup it was.
//   - The backup is never the primary. With one node there is no backup
//     (""); with none, both are "".
type Placement struct {
	nodes []placeNode // sorted by name
}

type placeNode struct {
	name string
	seed uint64
}

// NewPlacement returns the placement over names. Duplicates and empty
// names are ignored.
func NewPlacement(names []string) *Placement {
	names = slices.Clone(names)
	slices.Sort(names)
	names = slices.Compact(names)
	p := &Placement{nodes: make([]placeNode, 0, len(names))}
	for _, n := range names {
		if n == "" {
			continue
		}
		p.nodes = append(p.nodes, placeNode{name: n, seed: mix64(fnv64(n) ^ 0x9e3779b97f4a7c15)})
	}
	return p
}

// Nodes returns the node names the placement is over, sorted.
func (p *Placement) Nodes() []string {
	out := make([]string, len(p.nodes))
	for i, n := range p.nodes {
		out[i] = n.name
	}
	return out
}

// Len is the number of nodes.
func (p *Placement) Len() int { return len(p.nodes) }

// Has reports whether name is one of the placement's nodes.
func (p *Placement) Has(name string) bool {
	_, ok := slices.BinarySearchFunc(p.nodes, name, func(n placeNode, s string) int {
		switch {
		case n.name < s:
			return -1
		case n.name > s:
			return 1
		}
		return 0
	})
	return ok
}

// PrimaryBackup returns the user's primary and backup node. user should be
// a bare JID string in a canonical form (the caller normalises case).
func (p *Placement) PrimaryBackup(user string) (primary, backup string) {
	h := fnv64(user)
	var s1, s2 uint64
	i1, i2 := -1, -1
	for i := range p.nodes {
		s := mix64(h ^ p.nodes[i].seed)
		// Ties (astronomically rare) go to the smaller name, which is the
		// earlier index since nodes are sorted: strict > keeps it.
		if i1 < 0 || s > s1 {
			s2, i2 = s1, i1
			s1, i1 = s, i
		} else if i2 < 0 || s > s2 {
			s2, i2 = s, i
		}
	}
	if i1 >= 0 {
		primary = p.nodes[i1].name
	}
	if i2 >= 0 {
		backup = p.nodes[i2].name
	}
	return primary, backup
}

// Primary returns the user's primary node ("" with no nodes).
func (p *Placement) Primary(user string) string {
	pr, _ := p.PrimaryBackup(user)
	return pr
}

// fnv64 is FNV-1a, 64 bits, over the bytes of s.
func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is the SplitMix64 finaliser: a bijection that spreads every input
// bit over the output, so that mix64(h^seedA) and mix64(h^seedB) behave as
// independent weights.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
