package router

import (
	"net"
	"testing"
	"time"

	"pushd/internal/stanza"
	"pushd/jsm"
)

func entries(seqs ...uint64) []jsm.Entry {
	out := make([]jsm.Entry, len(seqs))
	for i, s := range seqs {
		out[i] = jsm.Entry{Seq: s, Stanza: stanza.New(stanza.NSClient, "message")}
	}
	return out
}

func testStream(t *testing.T) (*stream, net.Conn) {
	t.Helper()
	srv, _ := New(DefaultConfig(), nil, Stores{})
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	go func() { // drain what the stream writes
		buf := make([]byte, 4096)
		for {
			if _, err := b.Read(buf); err != nil {
				return
			}
		}
	}()
	st := &stream{srv: srv, id: 1, w: newWire(a, time.Second), sm: true}
	return st, b
}

// XEP-0198 §4: h counts stanzas; acks trim the unacknowledged list (and
// jsm's queue, which keeps what a managed stream was written), and a
// client may not acknowledge more than it was sent.
func TestHandleAck(t *testing.T) {
	st, _ := testStream(t)
	for _, e := range entries(10, 11, 13) { // seqs need not be contiguous
		st.deliver(e)
	}
	if through, err := st.handleAck(2); err != nil || through != 11 {
		t.Fatalf("ack 2: %v %v", through, err)
	}
	if len(st.unacked) != 1 || st.unacked[0].Seq != 13 || st.ackedSeq != 11 {
		t.Fatalf("after ack 2: unacked %v, ackedSeq %d", st.unacked, st.ackedSeq)
	}
	if through, err := st.handleAck(2); err != nil || through != 0 {
		t.Fatalf("repeated ack: %d %v", through, err)
	}
	if _, err := st.handleAck(5); err == nil || err.Condition != "undefined-condition" {
		t.Fatalf("ack beyond what was sent: %v", err)
	}
	if _, err := st.handleAck(1); err == nil {
		t.Fatal("ack going backwards accepted")
	}
}

func TestAckCounterWraps(t *testing.T) {
	st, _ := testStream(t)
	st.acked, st.outCount = ^uint32(0)-1, ^uint32(0)-1
	for _, e := range entries(1, 2, 3) {
		st.deliver(e)
	}
	if _, err := st.handleAck(1); err != nil { // 2^32-2 + 3 wraps to 1
		t.Fatalf("wrapped ack: %v", err)
	}
	if len(st.unacked) != 0 {
		t.Fatalf("unacked after wrapped ack: %v", st.unacked)
	}
}

// On resumption the client's h says how many of the entries handed to jsm
// at detach it had; the queue is trimmed through the last of those.
func TestResumeMapsHToSeq(t *testing.T) {
	st, _ := testStream(t)
	for _, e := range entries(4, 7, 9) {
		st.deliver(e)
	}
	if _, err := st.handleAck(1); err != nil {
		t.Fatal(err)
	}
	handed := st.detach()
	if len(handed) != 2 || handed[0].Seq != 7 {
		t.Fatalf("handed over %v", handed)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			if _, err := b.Read(buf); err != nil {
				return
			}
		}
	}()
	acked, err := st.resume(newWire(a, time.Second), 2)
	if err != nil || acked != 7 {
		t.Fatalf("resume h=2: acked through %d, %v; want 7", acked, err)
	}
	if _, err := st.resume(newWire(a, time.Second), 9); err == nil {
		t.Fatal("resume claiming more than was sent accepted")
	}
}

func drained(t *testing.T) *wire {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			if _, err := b.Read(buf); err != nil {
				return
			}
		}
	}()
	return newWire(a, time.Second)
}

// H4: a stream adopted from a failed node may hear a count beyond what
// the backup's copy says was handed (entries whose replication the node
// did not live to send). The client has all of them; the resumption
// succeeds and treats every handed entry as acknowledged. A stream of
// this node's own is held to the rule, also once adopted and resumed.
func TestResumeAdoptedCountBeyondHanded(t *testing.T) {
	srv, _ := New(DefaultConfig(), nil, Stores{})
	st := &stream{srv: srv, id: 1, sm: true, adopted: true, acked: 3, outCount: 3, ackedSeq: 20,
		handedSeq: []uint64{21, 22}}
	acked, err := st.resume(drained(t), 6)
	if err != nil || acked != 22 {
		t.Fatalf("adopted resume h=6 over 2 handed: acked through %d, %v; want 22", acked, err)
	}
	if st.acked != 6 || st.outCount != 6 {
		t.Fatalf("counters after resume: acked %d out %d, want 6", st.acked, st.outCount)
	}
	st.deliver(entries(23)[0])
	st.detach()
	if _, err := st.resume(drained(t), 8); err == nil {
		t.Fatal("a second resumption claiming more than was sent accepted")
	}
}

// A stanza the router answers itself (a session request after <enable/>)
// counts for XEP-0198 but has no queue Seq: acknowledging it trims
// nothing and never moves the acknowledged Seq back.
func TestAckOfUnqueuedStanza(t *testing.T) {
	srv, _ := New(DefaultConfig(), nil, Stores{})
	st := &stream{srv: srv, id: 1, sm: true}
	es := entries(5, 6)
	st.deliver(es[0])
	st.deliver(jsm.Entry{Stanza: stanza.New(stanza.NSClient, "iq", "type", "result", "id", "s1")})
	if through, err := st.handleAck(2); err != nil || through != 5 || st.ackedSeq != 5 {
		t.Fatalf("ack of 5 and the answer: trim through %d (acked Seq %d), %v; want 5", through, st.ackedSeq, err)
	}
	st.deliver(es[1])
	st.deliver(jsm.Entry{Stanza: stanza.New(stanza.NSClient, "iq", "type", "result", "id", "s2")})
	st.detach()
	acked, err := st.resume(drained(t), 4)
	if err != nil || acked != 6 {
		t.Fatalf("resume over 6 and an answer: acked through %d, %v; want 6", acked, err)
	}
}
