package cluster

// MembershipListener hears about changes in the cluster's membership, with
// the member as it is after the change. It replaces memberlist's raw
// EventDelegate.
//
// What the implementer may assume:
//   - Calls come from one goroutine, one at a time, in the order this node
//     saw the changes; never from inside memberlist's locks, so a method may
//     call any Cluster method (Members, Placement, Send).
//   - When a call arrives, Cluster.Placement already reflects the change.
//   - The node itself is reported once, through NodeJoined, at New.
//   - A method that blocks delays later notifications (not memberlist):
//     hand long work (re-replicating a failed node's users) to a goroutine.
type MembershipListener interface {
	// NodeJoined: a member became alive (a new node, or one that was dead
	// or left and came back; compare Meta.Started to tell a restart).
	NodeJoined(m Member)
	// NodeLeft: a member left gracefully.
	NodeLeft(m Member)
	// NodeFailed: memberlist declared a member dead. The backups of its
	// users must take them over now (H3).
	NodeFailed(m Member)
	// NodeUpdated: a live member's metadata or its alive/suspect state
	// changed. Placement does not change on this event.
	NodeUpdated(m Member)
}

// NopListener is a MembershipListener that does nothing; embed it to
// implement only some methods.
type NopListener struct{}

func (NopListener) NodeJoined(Member)  {}
func (NopListener) NodeLeft(Member)    {}
func (NopListener) NodeFailed(Member)  {}
func (NopListener) NodeUpdated(Member) {}
