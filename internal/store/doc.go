// Package store opens a node's one badger database and keeps the small,
// rarely written records that live beside the queues: accounts (with SCRAM
// credentials, and the HA1 that SIP digest verifies against) and rosters.
//
// It owns the key layout of the whole database (keys.go), so that queue,
// and later the component registries, never collide. It never keeps a
// plain password, never logs a JID or a credential, and holds no state of
// its own between calls beyond the open database: jsm decides, store only
// remembers.
package store
