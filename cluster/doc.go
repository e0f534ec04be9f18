// Package cluster is pushd's high-availability layer (BEHAVIOUR H1–H4, H6):
// membership and failure detection over hashicorp/memberlist, the
// placement of each user on a primary and a backup node (rendezvous
// hashing over the live members), and the replication channel that streams
// records from a primary to its backup, each acknowledged once the backup
// applied it.
//
// cluster owns sockets, goroutines and timers for those three concerns and
// nothing else. It must never decide what happens to a stanza or a
// session: a record is a kind, a key and a body (package record), opaque
// to it; each kind's codec lives with the package that owns the data, and
// what a record means is the Applier's business, usually a Kinds the
// node's assembly lists. Adding a kind changes nothing here. jsm stays the
// only state machine; the cluster carries its records.
//
// The pieces can be used alone. Placement is a pure function of a member
// list (NewPlacement); a Replicator runs over any Transport, so failover
// tests can use the in-memory MemNetwork with no memberlist at all; Cluster
// (New) wires memberlist, a TCP transport and a Replicator together for
// production.
package cluster
