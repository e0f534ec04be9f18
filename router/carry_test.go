package router

import (
	"bytes"
	"testing"
)

// What a carry can send again: the client's stanzas after the node's last
// count, within the bounds; past them the oldest go, and first says from
// where the edge still has them all (H7).
func TestCarriedKeepsWithinBounds(t *testing.T) {
	sm := carried{inOn: true, first: 1}
	for range 10 {
		sm.keep([]byte("<message/>"))
	}
	sm.ack(4)
	if sm.in != 10 || len(sm.unacked) != 6 || sm.unacked[0].n != 5 || sm.first != 5 || sm.bytes != 60 {
		t.Fatalf("after 10 kept and 4 acknowledged: in %d, %d held from %d, first %d, %d bytes", sm.in, len(sm.unacked), sm.unacked[0].n, sm.first, sm.bytes)
	}
	big := bytes.Repeat([]byte("x"), carryBufferBytes/3)
	for range 4 {
		sm.keep(big)
	}
	if sm.bytes > carryBufferBytes || sm.unacked[len(sm.unacked)-1].n != 14 || sm.first != sm.unacked[0].n || sm.first <= 5 {
		t.Fatalf("past the byte bound: %d bytes held from %d (first %d)", sm.bytes, sm.unacked[0].n, sm.first)
	}
	for range carryBuffer + 10 {
		sm.keep([]byte("<r/>"))
	}
	if len(sm.unacked) != carryBuffer || sm.first != sm.in-carryBuffer+1 {
		t.Fatalf("past the count bound: %d held, first %d of %d", len(sm.unacked), sm.first, sm.in)
	}
}
