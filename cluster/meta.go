package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"pushd/cluster/record"
)

// MetaLimit is memberlist's bound on a node's metadata (memberlist.MetaMaxSize).
const MetaLimit = 512

// metaVersion is the first byte of an encoded NodeMeta. Fields are only
// ever appended within a version, and a decoder ignores bytes past the
// fields it knows, so a newer node's metadata still decodes on an older
// one; a change that an older decoder would misread bumps the version.
const metaVersion = 1

// ErrMetaTooLarge: the encoded NodeMeta does not fit MetaLimit.
var ErrMetaTooLarge = errors.New("cluster: node metadata exceeds 512 bytes")

// NodeMeta is what a node tells the others about itself through
// memberlist. It must encode to MetaLimit bytes or less.
//
// Encoding (version 1): the byte 1, a flags byte (bit 0: leaving), then
// C2SAddr, ClusterAddr, AdminAddr and Build, each as a uvarint length and
// the bytes, then Started as a uvarint of Unix milliseconds.
type NodeMeta struct {
	// C2SAddr is the host:port clients reach this node's XMPP listener at,
	// for redirects and for the address in call pushes (C2).
	C2SAddr string
	// ClusterAddr is the host:port of this node's replication listener.
	// New fills it from the advertise address and the replication port
	// when it is empty.
	ClusterAddr string
	// AdminAddr is the node's admin listener, for `pushd cluster status`
	// run against any node (may be empty).
	AdminAddr string
	// Build is the binary's version string, for rolling upgrades.
	Build string
	// Started is when the process started, in Unix milliseconds: a new
	// value under the same name is a restart (H6). New sets it.
	Started uint64
	// ForwardAddr is the host:port of this node's listener for stanzas
	// forwarded to it (apart from replication: see Cluster.Forward).
	ForwardAddr string
	// SIPAddr is the host:port phones register to at this node ([sip]
	// advertise): call pushes for the users it serves name it (C2).
	SIPAddr string
	// Leaving is set by Leave just before the node leaves, so that the
	// others report it as left rather than failed.
	Leaving bool
}

// Encode returns the versioned encoding of m.
func (m NodeMeta) Encode() ([]byte, error) {
	b := make([]byte, 0, 64)
	b = append(b, metaVersion)
	var flags byte
	if m.Leaving {
		flags |= 1
	}
	b = append(b, flags)
	for _, s := range []string{m.C2SAddr, m.ClusterAddr, m.AdminAddr, m.Build} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, m.Started)
	// Fields added later follow, so that older readers skip them.
	for _, s := range []string{m.ForwardAddr, m.SIPAddr} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	if len(b) > MetaLimit {
		return nil, fmt.Errorf("%w (%d)", ErrMetaTooLarge, len(b))
	}
	return b, nil
}

// DecodeNodeMeta parses what Encode produced, of this or a later minor
// revision of the same version.
func DecodeNodeMeta(b []byte) (NodeMeta, error) {
	var m NodeMeta
	if len(b) == 0 {
		return m, nil // a node that set no metadata
	}
	if b[0] != metaVersion {
		return m, fmt.Errorf("cluster: node metadata version %d, want %d", b[0], metaVersion)
	}
	d := record.NewDecoder(b[1:])
	flags := d.Byte()
	m.Leaving = flags&1 != 0
	m.C2SAddr = d.String()
	m.ClusterAddr = d.String()
	m.AdminAddr = d.String()
	m.Build = d.String()
	m.Started = d.Uvarint()
	if d.More() {
		m.ForwardAddr = d.String()
	}
	if d.More() {
		m.SIPAddr = d.String()
	}
	if err := d.Err(); err != nil {
		return NodeMeta{}, fmt.Errorf("cluster: node metadata: %w", err)
	}
	return m, nil
}
