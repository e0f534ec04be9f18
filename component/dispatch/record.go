package dispatch

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"pushd/component/payload"
)

// A pending push is stored under "dispatch/job/<tid>" in a fixed binary
// layout: every push is written once and its value goes through badger's
// log and memtable, so it is kept small and cheap to encode. Records of
// earlier versions are JSON (they start with '{') and still load.
//
//	recordV2
//	string  tid, registration id, provider, token, VoIP token, region,
//	        channel, sealed type, sealed enc, owner, topic
//	                                             (uvarint length ‖ bytes)
//	byte    flags (bit 0: legacy single channel)
//	varint  accepted, Unix nanoseconds
//	uvarint attempts
//
// recordV1 is the same without the owner (every push then was the
// component's). The device key is never part of a record (Push carries
// none), nor is the producer's Done: a push resumed after a restart has
// none.
const (
	recordV1 = 1
	recordV2 = 2
)

var errRecord = errors.New("dispatch: malformed push record")

// encodePush returns p's record.
func encodePush(p *Push) []byte {
	r := &p.Registration
	strs := [...]string{p.TrackingID, r.ID, string(r.Provider), r.Token, r.VoIPToken, r.Region,
		string(p.Channel), string(p.Sealed.Type), p.Sealed.Enc, r.Owner, r.Topic}
	n := 1 + 1 + 2*binary.MaxVarintLen64
	for _, s := range strs {
		n += 3 + len(s) // a length prefix of 3 bytes covers 2 MiB
	}
	b := make([]byte, 0, n)
	b = append(b, recordV2)
	for _, s := range strs {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	var flags byte
	if r.LegacySingleChannel {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.AppendVarint(b, p.Accepted.UnixNano())
	return binary.AppendUvarint(b, uint64(max(p.Attempts, 0)))
}

// decodePush reads a record written by encodePush, or the JSON of earlier
// versions.
func decodePush(b []byte) (Push, error) {
	var p Push
	if len(b) > 0 && b[0] == '{' {
		err := json.Unmarshal(b, &p)
		return p, err
	}
	var strs [11]string
	n := 0
	switch {
	case len(b) > 0 && b[0] == recordV1:
		n = 9
	case len(b) > 0 && b[0] == recordV2:
		n = 11
	default:
		return p, fmt.Errorf("%w: unknown format", errRecord)
	}
	b = b[1:]
	for i := range n {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return p, errRecord
		}
		strs[i] = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	if len(b) == 0 {
		return p, errRecord
	}
	flags := b[0]
	b = b[1:]
	accepted, k := binary.Varint(b)
	if k <= 0 {
		return p, errRecord
	}
	b = b[k:]
	attempts, k := binary.Uvarint(b)
	if k <= 0 || k != len(b) || attempts > 1<<31 {
		return p, errRecord
	}
	p = Push{
		TrackingID: strs[0],
		Registration: Registration{ID: strs[1], Provider: ProviderName(strs[2]), Token: strs[3], VoIPToken: strs[4],
			Region: strs[5], LegacySingleChannel: flags&1 != 0, Owner: strs[9], Topic: strs[10]},
		Channel:  payload.Channel(strs[6]),
		Sealed:   payload.Sealed{Type: payload.Type(strs[7]), Enc: strs[8]},
		Accepted: time.Unix(0, accepted),
		Attempts: int(attempts),
	}
	return p, nil
}
