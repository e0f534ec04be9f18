package router

import (
	"context"
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

// carryBuffer bounds the client stanzas kept for sending again. Past
// half of it the edge asks the user's node for an acknowledgement itself
// (XEP-0198 lets either side send <a/> unasked, so the answer is passed
// on), which trims it for clients that never ask.
const carryBuffer = 512

// carryAttempts bounds the nodes tried in a row when carrying on (a
// second failure during the first takeover).
const carryAttempts = 3

// carrier relays one authenticated client's stream (see relay).
type carrier struct {
	c    *c2s
	user string

	cw sync.Mutex // writes to the client
	uw sync.Mutex // writes to the user's node; taken after mu, never before

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
	first       uint32 // the count of the oldest stanza unacked may hold
	asked       bool   // the edge's own <r/> is unanswered
	csi         []byte // the client's last CSI state, said again after a carry
	closing     bool   // the client ended its stream
}

type sentStanza struct {
	n uint32
	b []byte
}

// appendTop serialises a top-level element of either stream; the stream
// namespace's own (features, error) keep the prefix the headers bind.
func appendTop(b []byte, el *stanza.Element) []byte {
	if el.Name.Space != stanza.NSStream {
		return stanza.Append(b, el, stanza.NSClient)
	}
	prefixed := *el
	prefixed.Name.Space, prefixed.Name.Local = stanza.NSClient, "stream:"+el.Name.Local
	return stanza.Append(b, &prefixed, stanza.NSClient)
}

// openUpstream opens a stream on conn, logged in by edgeLogin, and reads
// the node's header and features.
func (s *Server) openUpstream(conn net.Conn) (*stanza.Reader, string, *stanza.Element, error) {
	r, hdr, feats, err := s.openEdgeStream(conn)
	if err != nil {
		return nil, "", nil, err
	}
	var id string
	for _, a := range hdr.Attr {
		if a.Name.Space == "" && a.Name.Local == "id" {
			id = a.Value
		}
	}
	return r, id, feats, nil
}

// run relays until the stream ends; the client has restarted its stream
// (its header is read) and up is logged in at node.
func (k *carrier) run(up net.Conn) error {
	r, id, feats, err := k.c.srv.openUpstream(up)
	if err != nil {
		_ = up.Close()
		return err
	}
	k.c.header(id)
	k.c.out = appendTop(k.c.out, feats)
	if err := k.c.flush(); err != nil {
		_ = up.Close()
		return err
	}
	k.up = up
	k.c.srv.trackRelay(up, true)
	k.watch(up, k.node)
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.fromNode(r)
	}()
	k.fromClient()
	<-done
	return errRelayed
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
		el, err := k.c.r.Next()
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
			_, werr := io.WriteString(up, "</stream:stream>")
			k.uw.Unlock()
			if werr != nil {
				k.end()
			}
			return
		}
		if err != nil {
			// Bad XML gets its stream error from the edge, which read it;
			// the node sees the connection drop, as for any client.
			if se := readError(err); se != nil {
				k.c.srv.cfg.Metrics.streamErrors.WithLabelValues(se.Condition).Inc()
				k.cw.Lock()
				_, _ = k.c.conn.Write(appendStreamError(nil, se))
				k.cw.Unlock()
			}
			k.end()
			return
		}
		if !k.pass(el) {
			return
		}
	}
}

// pass sends one client element on, noting what XEP-0198 needs. While the
// stream is being carried on it waits; what it read then is in the
// carried state (a stanza in unacked, a CSI state, an ack request) and
// goes out with the carry, or was for the node that went away (an <a/>).
func (k *carrier) pass(el *stanza.Element) bool {
	b := appendTop(nil, el)
	k.mu.Lock()
	sm := &k.sm
	switch {
	case el.IsStanza():
		if sm.inOn {
			sm.in++
			sm.unacked = append(sm.unacked, sentStanza{sm.in, b})
			if len(sm.unacked) > carryBuffer {
				sm.unacked = sm.unacked[1:]
				sm.first = sm.unacked[0].n
			}
			if len(sm.unacked) >= carryBuffer/2 && !sm.asked && sm.id != "" {
				sm.asked = true
				b = append(b, `<r xmlns="urn:xmpp:sm:3"/>`...)
			}
		}
	case el.Is(stanza.NSSM, "enable"):
		sm.inOn, sm.in, sm.unacked, sm.first = true, 0, nil, 1
	case el.Is(stanza.NSSM, "resume"):
		if h, err := strconv.ParseUint(el.Get("h"), 10, 32); err == nil {
			sm.resumeH = uint32(h)
			sm.id = el.Get("previd")
		}
	case el.Name.Space == stanza.NSCSI:
		sm.csi = b
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
	_, err := up.Write(b)
	k.uw.Unlock()
	if err != nil {
		// The node's side notices too and carries the stream on; what
		// was lost here is in unacked.
		_ = up.Close()
	}
	return true
}

// fromNode reads the user's node's stream and passes it to the client,
// carrying the stream on when that node goes away.
func (k *carrier) fromNode(r *stanza.Reader) {
	defer k.end()
	for {
		el, err := r.Next()
		if err == nil && !(el.Is(stanza.NSStream, "error") && k.carryable(el)) {
			if !k.deliver(el) {
				return
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			// The node ended the stream (answering the client's end,
			// or its own decision): so does the client's.
			k.cw.Lock()
			_, _ = io.WriteString(k.c.conn, "</stream:stream>")
			k.cw.Unlock()
			return
		}
		if err == nil {
			k.c.srv.log.Info("cluster: the user's node moved a relayed stream on; carrying it", "user", k.c.srv.Redact(k.user), "node", k.node)
		}
		if r = k.carryOn(); r == nil {
			if err == nil {
				// Its own redirect, had the edge not been able to carry.
				_ = k.deliver(el)
			}
			return
		}
	}
}

// carryable: a stream error by which the node says the user is served
// elsewhere now (a handover) or that it is stopping.
func (k *carrier) carryable(el *stanza.Element) bool {
	return el.Child(stanza.NSStreamErr, "see-other-host") != nil || el.Child(stanza.NSStreamErr, "system-shutdown") != nil
}

// deliver writes one element of the node's to the client, noting what
// XEP-0198 needs.
func (k *carrier) deliver(el *stanza.Element) bool {
	k.mu.Lock()
	sm := &k.sm
	switch {
	case el.IsStanza():
		if sm.outOn {
			sm.out++
		}
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
	_, err := k.c.conn.Write(appendTop(nil, el))
	k.cw.Unlock()
	return err == nil
}

// ack drops the stanzas the node's count h covers.
func (sm *carried) ack(h uint32) {
	i := 0
	for i < len(sm.unacked) && int32(sm.unacked[i].n-h) <= 0 {
		i++
	}
	sm.unacked = sm.unacked[i:]
	if int32(h+1-sm.first) > 0 {
		sm.first = h + 1
	}
	sm.asked = false
}

// carryOn logs the client in where its user is served now and resumes
// its stream there. It returns the new node's reader, or nil when the
// stream cannot be carried on (then it ends).
func (k *carrier) carryOn() *stanza.Reader {
	s := k.c.srv
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
		r, err := k.resumeAt(node, addr)
		if err == nil {
			s.cfg.Metrics.carried.Inc()
			s.log.Info("cluster: relayed stream carried on", "user", s.Redact(k.user), "from", gone, "to", node, "took", time.Since(start))
			return r
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
func (k *carrier) resumeAt(node, addr string) (*stanza.Reader, error) {
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
	r, _, _, err := s.openUpstream(up)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	id, out := k.sm.id, k.sm.out
	k.mu.Unlock()
	if _, err := io.WriteString(up, `<resume xmlns="urn:xmpp:sm:3" previd="`+id+`" h="`+strconv.FormatUint(uint64(out), 10)+`"/>`); err != nil {
		return nil, err
	}
	el, err := r.Next()
	if err != nil {
		return nil, err
	}
	h64, err := strconv.ParseUint(el.Get("h"), 10, 32)
	if !el.Is(stanza.NSSM, "resumed") || err != nil {
		return nil, fmt.Errorf("%w: %s", errNotCarried, stanza.Marshal(el, stanza.NSClient))
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
	_, err = up.Write(again)
	k.uw.Unlock()
	if err != nil {
		// Carried, and broken again at once: the reader sees it.
		_ = up.Close()
	}
	keep = true
	s.trackRelay(up, true)
	k.watch(up, node)
	return r, nil
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
