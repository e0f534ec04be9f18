package cluster

import (
	"errors"
	"fmt"
)

// Applier is the receiving side of replication: the backup's storage and
// session manager. The Replicator calls Apply for each record a peer
// sends, in order, and acknowledges a frame to its sender only once every
// one of its records was applied and the waits Apply returned for them
// returned.
//
// Apply applies the record at once, in order, and may make it durable
// later: wait (nil: durable already) returns once the effect survives a
// crash of this node as well as a local write would (queue.AppendAsync's
// wait). The Replicator goes on with the next record meanwhile, so that a
// queue committing in groups takes one fsync for many records, and a
// forwarded stanza, whose durability includes its own replication, holds
// no stream while it waits (two nodes forwarding to each other would
// otherwise wait on each other). A wait's error is logged and counted;
// the frame is acknowledged all the same.
//
// What the implementer must guarantee:
//   - Idempotence: a record may be applied more than once (a sender resends
//     what was not acknowledged when a connection drops, and a restarted
//     receiver has forgotten what it applied). An append must skip entries
//     it holds (queue entries by device and seq); records that replace
//     state are idempotent by nature. A kind that cannot be (a forwarded
//     stanza) relies on the Replicator's in-order, apply-once stream.
//   - Errors are for transient local failures (storage closed, disk full)
//     and records this node cannot read (an unknown kind, a body that
//     does not decode). An error closes the stream and the sender retries
//     later; never refuse a record because of policy (quotas): the primary
//     already decided.
//
// What the implementer may assume:
//   - Records from one sender arrive in the order it sent them, one call
//     at a time. Different senders call concurrently.
//   - from is the sending node's name, authenticated when the cluster has
//     a secret key.
//   - A record's Key and Body are the implementer's to keep.
type Applier interface {
	Apply(from string, r Record) (wait func() error, err error)
}

// ApplyFunc applies the records of one kind, as Applier.Apply.
type ApplyFunc func(from string, r Record) (wait func() error, err error)

// Kinds is an Applier that dispatches by kind to the functions the
// node's assembly lists, one per kind it knows, each from the package
// that owns the kind's data. A kind not listed is refused.
type Kinds map[Kind]ApplyFunc

// ErrUnknownKind: a peer sent a record of a kind this node does not know
// (a newer binary's): the stream closes and the sender retries, so
// nothing is acknowledged that was not applied.
var ErrUnknownKind = errors.New("cluster: unknown record kind")

// Apply implements Applier.
func (k Kinds) Apply(from string, r Record) (func() error, error) {
	f := k[r.Kind]
	if f == nil {
		return nil, fmt.Errorf("%w %d", ErrUnknownKind, r.Kind)
	}
	return f(from, r)
}
