package store

// Every key in the database starts with one space byte. The layout of each
// space is written here and nowhere else; a package that adds records
// reserves its byte here first.
//
//	m "version"                          schema version of the database (one byte)
//	a <bare JID>                         account: SCRAM salt, iterations, StoredKey/ServerKey, digest HA1
//	r <bare JID> 0x00 <contact bare JID> roster item (JSON)
//	q <device> 0x00 <seq, 8 bytes BE>    queued stanza of a device (package queue)
//	o <bare JID> 0x00 <seq, 8 bytes BE>  offline message of a user (package queue)
//	p <device> 0x00 <app server> 0x00 <node>  XEP-0357 registration of a device (JSON)
//	c …                                  reserved: component device registry
//	d …                                  reserved: dispatch jobs awaiting a provider answer
//	h …                                  reserved: cluster replication state
//
// A device is a full JID string. Seq is big-endian so that badger's byte
// order is sequence order.
const (
	SpaceMeta      byte = 'm'
	SpaceAccount   byte = 'a'
	SpaceRoster    byte = 'r'
	SpaceQueue     byte = 'q'
	SpaceOffline   byte = 'o'
	SpacePush      byte = 'p'
	SpaceComponent byte = 'c'
	SpaceDispatch  byte = 'd'
	SpaceCluster   byte = 'h'
)

// Sep ends a variable-length part of a key. XML (and so every JID) cannot
// contain NUL, so Prefix(s, "a@b/c") is never a prefix of the keys of
// "a@b/cd".
const Sep byte = 0x00

// Prefix returns space, part, Sep: the prefix of every key that belongs to
// part (a device, a user) in space.
func Prefix(space byte, part string) []byte {
	k := make([]byte, 0, len(part)+2+8)
	k = append(k, space)
	k = append(k, part...)
	return append(k, Sep)
}

func accountKey(bare string) []byte {
	return append([]byte{SpaceAccount}, bare...)
}

func rosterKey(user, contact string) []byte {
	return append(Prefix(SpaceRoster, user), contact...)
}

var versionKey = []byte{SpaceMeta, 'v', 'e', 'r', 's', 'i', 'o', 'n'}

// schemaVersion is bumped by any change to the layout above that an older
// binary would misread. Open upgrades a database from the previous version
// in place; an older binary refuses a newer database.
//
//	1  accounts kept SCRAM salted passwords
//	2  accounts keep StoredKey/ServerKey (S5)
//	3  accounts may also keep SIP digest HA1 (record format 3); format-2
//	   records remain, so the upgrade from 2 rewrites nothing. The bump is
//	   for older binaries: they take a format-3 record for a corrupt one,
//	   and would fail each re-passworded account at its next login instead
//	   of refusing the database at Open.
const schemaVersion = 3
