package cluster

// Resyncer is told when records meant for a peer were dropped before the
// peer acknowledged them, so that the peer's copy of some users is now
// incomplete. The implementer re-sends the full state (sessions and
// every queued entry) of each user whose backup the peer is, exactly as it
// does when a new backup is chosen after a membership change.
//
// What the implementer may assume: Resync is called from the goroutine of
// the Send that overflowed, outside every lock of the Replicator; it
// should hand the work to another goroutine and return.
type Resyncer interface {
	Resync(peer string)
}
