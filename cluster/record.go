package cluster

import "pushd/cluster/record"

// Record and Kind are package record's: the owners of replicated data
// build records without importing this package; here they are what Send,
// Broadcast and Forward carry and what an Applier applies.
type (
	Record = record.Record
	Kind   = record.Kind
)
