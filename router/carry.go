package router

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"pushd/internal/stanza"
)

// A relayed stream outlives the node it is relayed to (H7). The edge
// reads the client's stream and the user's node's element by element and
// keeps what XEP-0198 needs to stand in for the client: the resumption
// id, how many stanzas each side has sent since <enabled/> or <resumed/>,
// and the client's stanzas the user's node has not acknowledged yet.
// When that node dies, or hands the user over, the edge logs the client
// in where the user is served now, resumes the stream there saying it
// handled every stanza it wrote to the client (the client's connection to
// the edge is intact, so the client has them all), and sends again what
// the new node's <resumed h/> shows it lacks. The client sees one
// unbroken stream; nothing it was sent comes twice, nothing it sent is
// lost.
//
// A stream that cannot be resumed (no XEP-0198, or no resume='true'), one
// the client is closing, or one whose unacknowledged stanzas outgrew the
// buffer, is closed as before: the client reconnects to any node.

// carryBuffer and carryBufferBytes bound the client stanzas kept for
// sending again (a client's stanzas may each be as large as the stream
// limit allows). Past half of either the edge asks the user's node for
// an acknowledgement itself (XEP-0198 lets either side send <a/> unasked,
// so the answer is passed on), which trims it for clients that never ask;
// past the bound the oldest go, and the stream can no longer be carried.
const (
	carryBuffer      = 512
	carryBufferBytes = 1 << 20
)

// carryAttempts bounds the nodes tried in a row when carrying on (a
// second failure during the first takeover).
const carryAttempts = 3

// carryBatch bounds what is batched for one write: elements that arrive
// together leave together, and nothing waits once the input is drained.
const carryBatch = 32 << 10

// carrier relays one authenticated client's stream (see relay). Elements
// pass as the bytes they came as (stanza.Scanner); only those XEP-0198
// and CSI need are parsed.
type carrier struct {
	c     *c2s
	user  string
	cs    *stanza.Scanner // the client's stream
	decls []string        // the client header's prefix declarations

	cw       sync.Mutex // writes to the client
	toClient []byte     // batched for the client, under cw

	uw     sync.Mutex // writes to the user's node; taken after mu, never before
	toUp   []byte     // batched for upFor, under uw
	toUpAt net.Conn

	mu    sync.Mutex
	node  string   // the node the stream is carried to
	up    net.Conn // nil while carrying on
	ready chan struct{}
	// unwatch ends the watch on the current node (see watch).
	unwatch chan struct{}
	done    bool
	sm      carried
}

// carried is the edge's view of the stream's XEP-0198 state.
type carried struct {
	id string // resumption id; "" while the stream cannot be resumed
	// Each side counts from its own point (XEP-0198 §4): the client's
	// stanzas from its <enable/>, the node's from its <enabled/> (or
	// both from the <resume/> they agreed on).
	inOn, outOn bool
	in, out     uint32 // stanzas client → node, node → client
	resumeH     uint32 // h of the client's own <resume/>, until answered
	unacked     []sentStanza
	bytes       int    // of unacked
	first       uint32 // the count of the oldest stanza unacked may hold
	asked       bool   // the edge's own <r/> is unanswered
	csi         []byte // the client's last CSI state, said again after a carry
	closing     bool   // the client ended its stream
}

type sentStanza struct {
	n uint32
	b []byte
}

// elementKind sorts a top-level element by its name as written, so that
// only the few the edge must read are parsed.
type elementKind uint8

const (
	kindOther   elementKind = iota
	kindStanza              // message, presence, iq
	kindNonza               // XEP-0198 or CSI: parsed
	kindStreamE             // stream:error
)

func kindOf(name []byte) elementKind {
	switch string(name) {
	case "message", "presence", "iq":
		return kindStanza
	case "enable", "enabled", "resume", "resumed", "failed", "r", "a", "active", "inactive":
		return kindNonza
	case "stream:error":
		return kindStreamE
	}
	return kindOther
}

// prefixDecls returns the header's namespace prefix declarations other
// than the stream's own, which the relayed elements may use: the edge's
// header to the user's node declares them too.
func prefixDecls(hdr xml.StartElement) []string {
	var decls []string
	for _, a := range hdr.Attr {
		if a.Name.Space == "xmlns" && a.Name.Local != "stream" {
			decls = append(decls, a.Name.Local, a.Value)
		}
	}
	return decls
}

// openUpstream opens the relayed stream on conn, logged in by edgeLogin:
// it returns the node's stream id, its features as written, and the
// scanner reading on from there.
func (k *carrier) openUpstream(conn net.Conn) (*stanza.Scanner, string, []byte, error) {
	hdr := []byte("<?xml version='1.0'?>")
	attrs := []string{"xmlns", stanza.NSClient, "xmlns:stream", stanza.NSStream}
	for i := 0; i+1 < len(k.decls); i += 2 {
		attrs = append(attrs, "xmlns:"+k.decls[i], k.decls[i+1])
	}
	hdr = stanza.AppendStart(hdr, "stream:stream", append(attrs, "to", k.c.srv.domain.String(), "version", "1.0")...)
	if _, err := conn.Write(hdr); err != nil {
		return nil, "", nil, err
	}
	sc := stanza.NewScanner(conn, k.c.srv.cfg.Limits)
	_, start, err := sc.Header()
	if err != nil {
		return nil, "", nil, err
	}
	raw, name, err := sc.Next()
	if err != nil {
		return nil, "", nil, err
	}
	if string(name) != "stream:features" {
		return nil, "", nil, fmt.Errorf("expected features, got %s", name)
	}
	var id string
	for _, a := range start.Attr {
		if a.Name.Space == "" && a.Name.Local == "id" {
			id = a.Value
		}
	}
	return sc, id, raw, nil
}

// run relays until the stream ends; the client has restarted its stream
// (its header is read) and up is logged in at node.
func (k *carrier) run(up net.Conn) error {
	sc, id, feats, err := k.openUpstream(up)
	if err != nil {
		_ = up.Close()
		return err
	}
	k.c.sentHd = false // the client's stream restarted
	k.c.header(id)
	k.c.out = append(k.c.out, feats...)
	if err := k.c.flush(); err != nil {
		_ = up.Close()
		return err
	}
	k.up, k.toUpAt = up, up
	k.c.srv.trackRelay(up, true)
	k.watch(up, k.node)
	k.cs.BeforeRead = k.flushUp
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.fromNode(sc)
	}()
	k.fromClient()
	<-done
	return errRelayed
}

// flushUp writes what was batched for the user's node.
func (k *carrier) flushUp() error {
	k.uw.Lock()
	defer k.uw.Unlock()
	if len(k.toUp) == 0 {
		return nil
	}
	_, err := k.toUpAt.Write(k.toUp)
	k.toUp = k.toUp[:0]
	if err != nil {
		// The node's side notices too and carries the stream on; what
		// was lost here is in unacked.
		_ = k.toUpAt.Close()
	}
	return nil
}

// flushClient writes what was batched for the client.
func (k *carrier) flushClient() error {
	k.cw.Lock()
	defer k.cw.Unlock()
	return k.flushClientLocked()
}

func (k *carrier) flushClientLocked() error {
	if len(k.toClient) == 0 {
		return nil
	}
	_, err := k.c.conn.Write(k.toClient)
	k.toClient = k.toClient[:0]
	return err
}

// stopWatch ends the watch on the node the stream leaves; under mu.
func (k *carrier) stopWatch() {
	if k.unwatch != nil {
		close(k.unwatch)
		k.unwatch = nil
	}
}

// end closes both sides once.
func (k *carrier) end() {
	k.mu.Lock()
	if k.done {
		k.mu.Unlock()
		return
	}
	k.done = true
	up := k.up
	k.up = nil
	k.stopWatch()
	if k.ready != nil {
		close(k.ready)
		k.ready = nil
	}
	k.mu.Unlock()
	if up != nil {
		_ = up.Close()
		k.c.srv.trackRelay(up, false)
	}
	_ = k.c.conn.Close()
}

// fromClient reads the client's stream and passes it on until it ends.
func (k *carrier) fromClient() {
	for {
		raw, name, err := k.cs.Next()
		if errors.Is(err, io.EOF) {
			// The client closed its stream: pass that on and let the
			// node answer with its own end tag, which ends the relay.
			k.mu.Lock()
			k.sm.closing = true
			up := k.up
			k.mu.Unlock()
			if up == nil {
				k.end()
				return
			}
			k.uw.Lock()
			if k.toUpAt == up {
				k.toUp = append(k.toUp, "</stream:stream>"...)
			}
			k.uw.Unlock()
			_ = k.flushUp()
			return
		}
		if err != nil {
			// Bad XML gets its stream error from the edge, which read it;
			// the node sees the connection drop, as for any client.
			if se := readError(err); se != nil {
				k.c.srv.cfg.Metrics.streamErrors.WithLabelValues(se.Condition).Inc()
				k.cw.Lock()
				k.toClient = appendStreamError(k.toClient, se)
				_ = k.flushClientLocked()
				k.cw.Unlock()
			}
			k.end()
			return
		}
		if !k.pass(raw, name) {
			return
		}
	}
}

// pass sends one client element on, noting what XEP-0198 needs. While the
// stream is being carried on it waits; what it read then is in the
// carried state (a stanza in unacked, a CSI state, an ack request) and
// goes out with the carry, or was for the node that went away (an <a/>).
func (k *carrier) pass(raw, name []byte) bool {
	var el *stanza.Element
	kind := kindOf(name)
	if kind == kindNonza {
		var err error
		if el, err = stanza.Unmarshal(raw, stanza.NSClient, 4); err != nil {
			kind = kindOther // the node judges it
		}
	}
	extra := ""
	k.mu.Lock()
	sm := &k.sm
	switch {
	case kind == kindStanza:
		if sm.inOn {
			sm.keep(raw)
			if (len(sm.unacked) >= carryBuffer/2 || sm.bytes >= carryBufferBytes/2) && !sm.asked && sm.id != "" {
				sm.asked = true
				extra = `<r xmlns="urn:xmpp:sm:3"/>`
			}
		}
	case el.Is(stanza.NSSM, "enable"):
		sm.inOn, sm.in, sm.unacked, sm.bytes, sm.first = true, 0, nil, 0, 1
	case el.Is(stanza.NSSM, "resume"):
		if h, err := strconv.ParseUint(el.Get("h"), 10, 32); err == nil {
			sm.resumeH = uint32(h)
			sm.id = el.Get("previd")
		}
	case el != nil && el.Name.Space == stanza.NSCSI:
		sm.csi = bytes.Clone(raw)
	}
	waited := false
	for k.up == nil && !k.done {
		waited = true
		ready := k.ready
		k.mu.Unlock()
		<-ready
		k.mu.Lock()
	}
	up := k.up
	k.mu.Unlock()
	if up == nil {
		return false
	}
	if waited {
		return true
	}
	k.uw.Lock()
	if k.toUpAt != up {
		// Read for the node that went away, and carried on since.
		k.uw.Unlock()
		return true
	}
	k.toUp = append(append(k.toUp, raw...), extra...)
	full := len(k.toUp) >= carryBatch
	k.uw.Unlock()
	if full {
		_ = k.flushUp()
	}
	return true
}

// fromNode reads the user's node's stream and passes it to the client,
// carrying the stream on when that node goes away.
func (k *carrier) fromNode(sc *stanza.Scanner) {
	defer k.end()
	sc.BeforeRead = k.flushClient
	for {
		raw, name, err := sc.Next()
		if err == nil && !(kindOf(name) == kindStreamE && carryable(raw)) {
			if !k.deliver(raw, name) {
				return
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			// The node ended the stream (answering the client's end,
			// or its own decision): so does the client's.
			k.cw.Lock()
			k.toClient = append(k.toClient, "</stream:stream>"...)
			_ = k.flushClientLocked()
			k.cw.Unlock()
			return
		}
		if err == nil {
			k.c.srv.log.Info("cluster: the user's node moved a relayed stream on; carrying it", "user", k.c.srv.Redact(k.user), "node", k.node)
			raw = bytes.Clone(raw)
		}
		if sc = k.carryOn(); sc == nil {
			if err == nil {
				// Its own redirect, had the edge not been able to carry.
				_ = k.deliver(raw, name)
				_ = k.flushClient()
			}
			return
		}
		sc.BeforeRead = k.flushClient
	}
}

// carryable: a stream error by which the node (a pushd node, which
// writes it so) says the user is served elsewhere now (a handover) or
// that it is stopping.
func carryable(raw []byte) bool {
	return bytes.Contains(raw, []byte("<see-other-host")) || bytes.Contains(raw, []byte("<system-shutdown"))
}

// deliver passes one element of the node's to the client, noting what
// XEP-0198 needs.
func (k *carrier) deliver(raw, name []byte) bool {
	kind := kindOf(name)
	var el *stanza.Element
	if kind == kindNonza {
		el, _ = stanza.Unmarshal(raw, stanza.NSClient, 4)
	}
	k.mu.Lock()
	sm := &k.sm
	switch {
	case kind == kindStanza:
		if sm.outOn {
			sm.out++
		}
	case kind == kindStreamE:
		sm.closing = true // the node ends the stream, not to be carried
	case el.Is(stanza.NSSM, "enabled"):
		sm.id = ""
		if el.Get("resume") == "true" || el.Get("resume") == "1" {
			sm.id = el.Get("id")
		}
		sm.outOn, sm.out = true, 0
	case el.Is(stanza.NSSM, "resumed"):
		if h, err := strconv.ParseUint(el.Get("h"), 10, 32); err == nil {
			*sm = carried{id: sm.id, inOn: true, outOn: true, in: uint32(h), out: sm.resumeH, first: uint32(h) + 1, csi: sm.csi}
		}
	case el.Is(stanza.NSSM, "failed"):
		if !sm.outOn {
			// The client's <enable/> or its own <resume/> failed.
			sm.id, sm.inOn = "", false
		}
	case el.Is(stanza.NSSM, "a"):
		if h, err := strconv.ParseUint(el.Get("h"), 10, 32); err == nil {
			sm.ack(uint32(h))
		}
	}
	k.mu.Unlock()
	k.cw.Lock()
	defer k.cw.Unlock()
	k.toClient = append(k.toClient, raw...)
	if len(k.toClient) >= carryBatch {
		return k.flushClientLocked() == nil
	}
	return true
}

// keep counts one more client stanza and holds it for a carry, within
// the bounds: past them the oldest go.
func (sm *carried) keep(raw []byte) {
	sm.in++
	sm.unacked = append(sm.unacked, sentStanza{sm.in, bytes.Clone(raw)})
	sm.bytes += len(raw)
	for len(sm.unacked) > carryBuffer || sm.bytes > carryBufferBytes {
		sm.bytes -= len(sm.unacked[0].b)
		sm.unacked = sm.unacked[1:]
		sm.first = sm.in + 1
		if len(sm.unacked) > 0 {
			sm.first = sm.unacked[0].n
		}
	}
}

// ack drops the stanzas the node's count h covers.
func (sm *carried) ack(h uint32) {
	i := 0
	for i < len(sm.unacked) && int32(sm.unacked[i].n-h) <= 0 {
		i++
	}
	for _, st := range sm.unacked[:i] {
		sm.bytes -= len(st.b)
	}
	sm.unacked = sm.unacked[i:]
	if int32(h+1-sm.first) > 0 {
		sm.first = h + 1
	}
	sm.asked = false
}

// carryOn logs the client in where its user is served now and resumes
// its stream there. It returns the scanner of the new node's stream, or
// nil when the stream cannot be carried on (then it ends).
func (k *carrier) carryOn() *stanza.Scanner {
	s := k.c.srv
	_ = k.flushClient() // what the old node sent before it went
	k.mu.Lock()
	if k.done {
		k.mu.Unlock()
		return nil
	}
	old, gone := k.up, k.node
	k.up, k.ready = nil, make(chan struct{})
	k.stopWatch()
	id, closing := k.sm.id, k.sm.closing
	k.mu.Unlock()
	if old != nil {
		_ = old.Close()
		s.trackRelay(old, false)
	}
	if id == "" || closing || s.cfg.Cluster == nil {
		return nil
	}
	start := time.Now()
	for range carryAttempts {
		select {
		case <-s.closing:
			return nil
		default:
		}
		node, addr, ok := s.cfg.Cluster.Rehome(k.user, gone)
		if !ok {
			s.log.Warn("cluster: no node took over a relayed stream's user; closing it", "user", s.Redact(k.user), "gone", gone)
			return nil
		}
		sc, err := k.resumeAt(node, addr)
		if err == nil {
			s.cfg.Metrics.carried.Inc()
			s.log.Info("cluster: relayed stream carried on", "user", s.Redact(k.user), "from", gone, "to", node, "took", time.Since(start))
			return sc
		}
		s.log.Warn("cluster: carrying a relayed stream on failed", "user", s.Redact(k.user), "node", node, "err", err)
		if errors.Is(err, errNotCarried) {
			return nil
		}
		gone = node
	}
	return nil
}

// errNotCarried: the node answered, but the stream cannot go on there
// (its <resume/> failed, or what the client sent is no longer all here).
var errNotCarried = errors.New("router: stream not carried on")

// resumeAt logs the client in at node and resumes its stream there.
func (k *carrier) resumeAt(node, addr string) (*stanza.Scanner, error) {
	s := k.c.srv
	ctx, cancel := context.WithTimeout(context.Background(), relayDialTimeout)
	defer cancel()
	up, err := s.edgeLogin(ctx, addr, k.c.user)
	if err != nil {
		return nil, err
	}
	keep := false
	defer func() {
		if !keep {
			_ = up.Close()
		}
	}()
	if dl, ok := ctx.Deadline(); ok {
		_ = up.SetDeadline(dl)
	}
	sc, _, _, err := k.openUpstream(up)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	id, out := k.sm.id, k.sm.out
	k.mu.Unlock()
	if _, err := io.WriteString(up, `<resume xmlns="urn:xmpp:sm:3" previd="`+id+`" h="`+strconv.FormatUint(uint64(out), 10)+`"/>`); err != nil {
		return nil, err
	}
	raw, _, err := sc.Next()
	if err != nil {
		return nil, err
	}
	el, err := stanza.Unmarshal(raw, stanza.NSClient, 4)
	if err != nil {
		return nil, err
	}
	h64, err := strconv.ParseUint(el.Get("h"), 10, 32)
	if !el.Is(stanza.NSSM, "resumed") || err != nil {
		return nil, fmt.Errorf("%w: %s", errNotCarried, raw)
	}
	h := uint32(h64)
	_ = up.SetDeadline(time.Time{})

	k.mu.Lock()
	sm := &k.sm
	if k.done || int32(h-sm.in) > 0 || int32(sm.first-(h+1)) > 0 {
		// The node counts more than the client sent, or the stanzas
		// after its count are no longer all kept.
		in, first := sm.in, sm.first
		k.mu.Unlock()
		return nil, fmt.Errorf("%w: the node counts %d of the client's stanzas, the edge %d, keeping from %d", errNotCarried, h, in, first)
	}
	sm.ack(h)
	var again []byte
	for _, st := range sm.unacked {
		again = append(again, st.b...)
	}
	// The client's own request for an acknowledgement may have gone to
	// the node that went away; the answer to this one is passed on.
	sm.asked = true
	again = append(again, sm.csi...)
	again = append(again, `<r xmlns="urn:xmpp:sm:3"/>`...)
	k.up, k.node = up, node
	close(k.ready)
	k.ready = nil
	k.uw.Lock()
	k.mu.Unlock()
	k.toUp, k.toUpAt = k.toUp[:0], up
	_, err = up.Write(again)
	k.uw.Unlock()
	if err != nil {
		// Carried, and broken again at once: the reader sees it.
		_ = up.Close()
	}
	keep = true
	s.trackRelay(up, true)
	k.watch(up, node)
	return sc, nil
}

// watch closes up once the view serves the user from a node other than
// node: a node that was paused or cut off keeps the connection open but
// says nothing, and its user has been taken over meanwhile. The reader
// then carries the stream on.
func (k *carrier) watch(up net.Conn, node string) {
	if k.c.srv.cfg.Cluster == nil {
		return
	}
	stop := make(chan struct{})
	k.mu.Lock()
	if k.done || k.up != up {
		k.mu.Unlock()
		return
	}
	k.unwatch = stop
	k.mu.Unlock()
	go func() {
		if k.c.srv.cfg.Cluster.AwaitMoved(k.user, node, stop) {
			_ = up.Close()
		}
	}()
}
