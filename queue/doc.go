// Package queue keeps, durably and in order, the stanzas waiting for each
// suspended device (BEHAVIOUR M2, M5, M9) and each user's offline messages
// (M10, XEP-0160), in the node's badger database under the key spaces that
// internal/store reserves for it.
//
// It carries out jsm's Enqueue, Flush, Trim, DropQueue, StoreOffline and
// FlushOffline actions; it never decides what is queued, for whom, or when
// a queue is flushed. Every mutation goes through one committer goroutine,
// which is what makes appends idempotent, quotas exact and group commit
// (one fsync for everything that was waiting) possible. An Append returns
// only once its entries are as durable as Config.Sync promises: the caller
// may then acknowledge the sender (H2). It never logs a JID or a stanza.
package queue
