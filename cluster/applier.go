package cluster

// Applier is the receiving side of replication: the backup's storage and
// session manager. The Replicator calls it for each record a peer sends,
// and acknowledges the record to the sender only after the call returned
// nil.
//
// What the implementer must guarantee:
//   - Idempotence: a record may be applied more than once (a sender resends
//     what was not acknowledged when a connection drops, and a restarted
//     receiver has forgotten what it applied). QueueAppend must skip
//     entries whose (device, seq) is held; the other records replace state
//     and are idempotent by nature.
//   - Durability: return only when the effect survives a crash of this
//     node as well as a local write would (queue.AppendAsync's wait).
//   - Errors are for transient local failures (storage closed, disk full).
//     An error closes the stream and the sender retries later; never refuse
//     a record because of policy (quotas): the primary already decided.
//
// What the implementer may assume:
//   - Records from one sender arrive in the order it sent them, one call
//     at a time. Different senders call concurrently.
//   - from is the sending node's name, authenticated when the cluster has
//     a secret key.
//   - Byte slices in a record are the implementer's to keep.
type Applier interface {
	ApplyQueueAppend(from string, r QueueAppend) error
	ApplyQueueTrim(from string, r QueueTrim) error
	ApplyQueueRemove(from string, r QueueRemove) error
	ApplyQueueDrop(from string, r QueueDrop) error
	ApplySession(from string, r SessionRecord) error
	ApplySessionGone(from string, r SessionGone) error
	ApplyAccount(from string, r AccountRecord) error
	// ApplyStanza routes a forwarded stanza; it returns once what the
	// stanza caused is as durable as a local stanza's would be.
	ApplyStanza(from string, r StanzaRecord) error
	// ApplyRegistry stores or removes a push device registration.
	ApplyRegistry(from string, r RegistryRecord) error
	// ApplyHandoverEnd: from has handed over what this node now serves.
	ApplyHandoverEnd(from string, r HandoverEnd) error
	// ApplyOfflineAdd and ApplyOfflineTrim mirror a user's offline store;
	// OfflineAdd is idempotent by (user, seq) as QueueAppend is.
	ApplyOfflineAdd(from string, r OfflineAdd) error
	ApplyOfflineTrim(from string, r OfflineTrim) error
}

// apply dispatches r to the matching Applier method.
func apply(a Applier, from string, r Record) error {
	switch r := r.(type) {
	case QueueAppend:
		return a.ApplyQueueAppend(from, r)
	case QueueTrim:
		return a.ApplyQueueTrim(from, r)
	case QueueRemove:
		return a.ApplyQueueRemove(from, r)
	case QueueDrop:
		return a.ApplyQueueDrop(from, r)
	case SessionRecord:
		return a.ApplySession(from, r)
	case SessionGone:
		return a.ApplySessionGone(from, r)
	case AccountRecord:
		return a.ApplyAccount(from, r)
	case StanzaRecord:
		return a.ApplyStanza(from, r)
	case RegistryRecord:
		return a.ApplyRegistry(from, r)
	case HandoverEnd:
		return a.ApplyHandoverEnd(from, r)
	case OfflineAdd:
		return a.ApplyOfflineAdd(from, r)
	case OfflineTrim:
		return a.ApplyOfflineTrim(from, r)
	}
	return errUnknownRecord
}

// AsyncApplier is an Applier that applies records at once, in order, but
// makes them durable later: the Replicator goes on with the next record
// and acknowledges a frame to its sender only when the waits of its
// records returned. A queue that commits in groups then takes one fsync
// for many records instead of one each; and a forwarded stanza, whose
// durability includes its own replication, holds no stream while it waits
// (two nodes forwarding to each other would otherwise wait on each other).
type AsyncApplier interface {
	ApplyAsync(from string, r Record) (wait func() error, err error)
}
