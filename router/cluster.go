package router

import (
	"sync"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
	"pushd/jsm"
)

// Cluster is what the router needs of the other nodes (BEHAVIOUR H1–H4).
// A node alone has none. Waits returned by its methods behave as the
// Queue's: submitted in order under the router's lock, waited outside it.
type Cluster interface {
	// Home says where user's (a bare JID's) sessions live: here, or on
	// node, whose clients connect at c2sAddr.
	Home(user string) (here bool, node, c2sAddr string)
	// Serving names the node that serves user now, without waiting for a
	// takeover or a sync as Home may: "" while none is known, or while
	// this node takes the user over (stanzas are then held, in order,
	// until Home says it is done).
	Serving(user string) string
	// Claimed is Home for a stream another node relays here, naming this
	// node: it waits, bounded by the takeover, for this node to serve
	// user before it says where user lives.
	Claimed(user string) (here bool, node, c2sAddr string)
	// Rehome waits, bounded by the takeover, until a node other than
	// gone (dead, or having handed user over) serves user, and names it
	// and where its clients connect; ok false if none does in time.
	Rehome(user, gone string) (node, c2sAddr string, ok bool)
	// AwaitMoved blocks until a node other than node serves user (true),
	// or stop is closed (false): a relayed stream's node may go quiet
	// (paused, cut off) rather than close its connection.
	AwaitMoved(user, node string, stop <-chan struct{}) bool
	// Forward hands a stanza to node, where its recipient lives; wait
	// returns once the node holds what the stanza caused durably.
	Forward(node string, st *stanza.Element) (wait func() error)
	Replica
}

// Replica sends what must outlive this node to the backup of each
// device's user (H2): every queue change and the device's session.
type Replica interface {
	Enqueue(device string, entries []jsm.Entry) (wait func() error)
	Trim(device string, through uint64) (wait func() error)
	Remove(device string, seqs []uint64) (wait func() error)
	Drop(device string) (wait func() error)
	Session(s SessionState) (wait func() error)
	SessionGone(device string) (wait func() error)
	// StoreOffline and TakeOffline mirror the user's offline store
	// (XEP-0160): a message kept under e.Seq, and those up to through
	// taken.
	StoreOffline(user string, e jsm.Entry) (wait func() error)
	TakeOffline(user string, through uint64) (wait func() error)
}

// SessionState is a device's XEP-0198 session and push registrations:
// what a backup needs to take the device over and let the client resume
// there (H3, H4).
type SessionState struct {
	Device string
	// SMID is the resumption id; Handled the count of stanzas received
	// from the client that may be reported handled; Acked the client's
	// last <a h/>, and AckedSeq the Seq it covered.
	SMID     string
	Handled  uint32
	Acked    uint32
	AckedSeq uint64
	// Live: the stream was connected. Otherwise Handed are the Seqs of
	// the entries written but unacknowledged when it detached; for a live
	// stream they are the queue's entries after AckedSeq.
	Live          bool
	Handed        []uint64
	Registrations []jsm.Registration
	// Pushed is the last queue Seq a notification the app server took
	// covered (jsm.Pushed): a backup pushes for what came after.
	Pushed uint64
}

// AdoptedSession is a replicated session this node takes over.
type AdoptedSession = SessionState

// homeOf returns the stanza's recipient (a bare JID) and the node it
// must be forwarded to, or node "" when the recipient lives here (or is
// not a user of this domain).
func (s *Server) homeOf(el *stanza.Element) (user, node string) {
	if s.cfg.Cluster == nil {
		return "", ""
	}
	to, err := jid.Parse(el.Get("to"))
	if err != nil || to.Localpart() == "" || to.Domainpart() != s.domain.Domainpart() {
		return "", ""
	}
	user = to.Bare().String()
	if here, node, _ := s.cfg.Cluster.Home(user); !here {
		return user, node
	}
	return user, ""
}

// session captures the stream's session for its backup. A detached
// stream names the Seqs it handed out unacknowledged; a live one the Seq
// its client acknowledged last: jsm keeps what a managed stream was
// handed a prefix of the device's queue, so the backup's copy of the
// queue tells the rest.
func (st *stream) session() SessionState {
	st.mu.Lock()
	defer st.mu.Unlock()
	// Handled is what the backup may report: the client's stanzas whose
	// writes are durable here and there (replicateHandled), never merely
	// received.
	ss := SessionState{Device: st.from, SMID: st.resumeID, Handled: st.handled, Acked: st.acked, AckedSeq: st.ackedSeq,
		Registrations: st.regs, Pushed: st.pushed}
	if st.w == nil {
		ss.Handed = append([]uint64(nil), st.handedSeq...)
	} else {
		ss.Live = true
	}
	return ss
}

// replicate sends the stream's session to its user's backup in the
// background.
func (s *Server) replicate(st *stream) {
	if w := s.sendSession(st); w != nil {
		s.background(w)
	}
}

// sendSession sends the stream's session to its user's backup, live or
// hibernating, unless it cannot be resumed or has ended (wait nil).
func (s *Server) sendSession(st *stream) (wait func() error) {
	c := s.cfg.Cluster
	if c == nil || st.resumeID == "" {
		return nil
	}
	st.recMu.Lock()
	defer st.recMu.Unlock()
	if st.ended {
		return nil
	}
	return c.Session(st.session())
}

// replicateHandled raises the count the backup may report as handled to
// h, once every stanza it covers is durable; the client hears of h after
// the backup holds it, so a resumption there never reports less than
// this node acknowledged (the client would send those stanzas twice).
func (s *Server) replicateHandled(st *stream, h uint32) (wait func() error) {
	st.mu.Lock()
	st.handled = h
	st.mu.Unlock()
	return s.sendSession(st)
}

// replicateEnd tells the backup the session is over; no record of the
// stream follows it.
func (s *Server) replicateEnd(st *stream) {
	c := s.cfg.Cluster
	if c == nil || st.resumeID == "" {
		return
	}
	st.recMu.Lock()
	defer st.recMu.Unlock()
	if !st.ended {
		st.ended = true
		s.background(c.SessionGone(st.from))
	}
}

// registrationsChanged keeps the device's stream's copy of its push
// registrations current and sends it to the backup; s.mu is held.
func (s *Server) registrationsChanged(device string) {
	for _, st := range s.streams {
		if st.from != device {
			continue
		}
		regs := s.machine.Registrations(device)
		st.mu.Lock()
		st.regs = regs
		st.mu.Unlock()
		s.replicate(st)
		return
	}
}

// StepForwarded routes a stanza another node forwarded and returns once
// what it caused is durable, so that the forwarding node may acknowledge
// its sender (DESIGN rule 2 across nodes).
func (s *Server) StepForwarded(el *stanza.Element, size int) error {
	return s.StepForwardedAsync(el, size)()
}

// StepForwardedAsync routes the stanza now and returns a wait for what it
// caused to be durable, here and on this node's backup (DESIGN rule 2
// across nodes). A copy of a stanza already routed here is dropped.
func (s *Server) StepForwardedAsync(el *stanza.Element, size int) (wait func() error) {
	if id := forwardID(el); id != "" && !s.forwards.add(id) {
		return func() error { return nil } // a copy of one already routed
	}
	return joinWaits(s.stepPastLanes(jsm.Forwarded{Stanza: el, Size: size}))
}

// Adopt takes over devices whose user's primary failed (H3): each comes
// back suspended with its queue (already in this node's queue store,
// replicated) and its registrations, so pushes go on from here; a session
// with a resumption id can be resumed here with its counters (H4).
// registrations adds push registrations of devices without a session (a
// node's own store at start); offline counts the offline messages of the
// users it now serves (jsm.Adopt).
func (s *Server) Adopt(sessions []AdoptedSession, queues map[string]jsm.QueueInfo, registrations map[string][]jsm.Registration, offline map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev := jsm.Adopt{Queues: queues, Registrations: map[string][]jsm.Registration{}, Streams: map[string]jsm.StreamID{},
		Unpushed: map[string][]jsm.Entry{}, Offline: offline}
	for dev, regs := range registrations {
		ev.Registrations[dev] = regs
	}
	pushed := map[string]uint64{} // the devices whose session says what was pushed
	live := map[string]*stream{}  // adopted streams that were connected
	for _, ss := range sessions {
		pushed[ss.Device] = ss.Pushed
		full, err := jid.Parse(ss.Device)
		if err != nil || full.Resourcepart() == "" {
			continue
		}
		if len(ss.Registrations) > 0 {
			ev.Registrations[ss.Device] = ss.Registrations
		}
		if ss.SMID == "" || s.resumable[ss.SMID] != nil {
			continue
		}
		st := &stream{srv: s, id: jsm.StreamID(s.nextID.Add(1)), jid: full, from: ss.Device,
			sm: true, resumeID: ss.SMID, inCount: ss.Handled, acked: ss.Acked, outCount: ss.Acked,
			ackedSeq: ss.AckedSeq, handedSeq: append([]uint64(nil), ss.Handed...), adopted: true,
			handled: ss.Handled, regs: ss.Registrations, pushed: ss.Pushed}
		if ss.Live {
			live[ss.Device] = st
		}
		s.streams[st.id] = st
		s.resumable[st.resumeID] = st
		s.cfg.Metrics.streams.Inc()
		s.cfg.Metrics.detached.Inc()
		ev.Streams[ss.Device] = st.id
	}
	// One read of each adopted queue: forwarded stanzas in it must not be
	// delivered again when their sender's node resends them here; what
	// came after the last push is pushed from here; and a stream that was
	// connected had been handed the entries after the Seq its client
	// acknowledged, in order (jsm.Managed keeps them a prefix of the
	// queue).
	for dev := range queues {
		after, known := pushed[dev]
		st := live[dev]
		_ = s.queue.Read(dev, 0, func(e jsm.Entry) error {
			if id := forwardID(e.Stanza); id != "" {
				s.forwards.add(id)
			}
			if known && e.Seq > after {
				ev.Unpushed[dev] = append(ev.Unpushed[dev], e)
			}
			if st != nil && e.Seq > st.ackedSeq {
				st.handedSeq = append(st.handedSeq, e.Seq)
			}
			return nil
		})
	}
	s.stepLocked(ev)
}

func forwardID(el *stanza.Element) string {
	if f := el.Child(stanza.NSInternal, "fwd"); f != nil {
		return f.Get("id")
	}
	return ""
}

// seenSet remembers the latest forwarding ids, bounded, first in first
// out: a resend follows its original within seconds.
type seenSet struct {
	mu    sync.Mutex
	ids   map[string]struct{}
	order []string
	next  int
}

const seenForwards = 1 << 16

// add records id and reports whether it is new.
func (s *seenSet) add(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = make(map[string]struct{}, seenForwards)
		s.order = make([]string, seenForwards)
	}
	if _, ok := s.ids[id]; ok {
		return false
	}
	if old := s.order[s.next]; old != "" {
		delete(s.ids, old)
	}
	s.order[s.next] = id
	s.next = (s.next + 1) % seenForwards
	s.ids[id] = struct{}{}
	return true
}

// Handover is a device this node gives to the node that now serves its
// user (a returning primary): its session and what its queue holds.
type Handover struct {
	Session SessionState
	Entries []jsm.Entry
}

// Forget drops the devices whose full JID mine selects, stale because
// another node took them over while this one was cut off: live clients
// are sent to redirect, and nothing is kept or handed on (the queues are
// replaced by the handover that follows). It returns how many went.
func (s *Server) Forget(mine func(device string) bool, redirect string) int {
	n, _ := s.forgetDevices(mine, redirect)
	return n
}

// SendAway is Forget for a node that stops (O7): it returns once each
// live client has been written its see-other-host, each bounded by the
// write timeout, so that stopping the listeners does not cut it off.
func (s *Server) SendAway(mine func(device string) bool, redirect string) int {
	n, wires := s.forgetDevices(mine, redirect)
	for _, w := range wires {
		<-w.done
	}
	return n
}

func (s *Server) forgetDevices(mine func(device string) bool, redirect string) (int, []*wire) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var devices []string
	var wires []*wire
	for _, st := range s.streams {
		if !mine(st.from) {
			continue
		}
		s.forget(st)
		st.mu.Lock()
		if st.w != nil {
			wires = append(wires, st.w)
		}
		st.mu.Unlock()
		st.close(seeOtherHost(redirect))
		devices = append(devices, st.from)
	}
	// Devices without a stream (restored, adopted) go too.
	s.stepLocked(jsm.Release{Devices: devices, Match: mine})
	return len(devices), wires
}

// Release gives up the devices whose full JID mine selects (H4
// fallback): a live stream is detached as if dropped and its client sent
// to redirect (see-other-host); each device's session and queue are
// returned for the caller to send to their new node, and forgotten here.
func (s *Server) Release(mine func(device string) bool, redirect string) []Handover {
	s.mu.Lock()
	var out []Handover
	var devices []string
	for _, st := range s.streams {
		if !mine(st.from) {
			continue
		}
		st.mu.Lock()
		w := st.w
		st.mu.Unlock()
		if w != nil {
			s.cfg.Metrics.detached.Inc()
			s.stepLocked(jsm.Detached{Stream: st.id, Unacked: st.detach()})
			w.close(appendStreamError(nil, seeOtherHost(redirect)))
		}
		if st.resumeID != "" {
			out = append(out, Handover{Session: st.session()})
		}
		devices = append(devices, st.from)
		s.forget(st)
	}
	if len(devices) > 0 {
		s.stepLocked(jsm.Release{Devices: devices})
	}
	s.mu.Unlock()
	for i := range out {
		dev := out[i].Session.Device
		_ = s.queue.Read(dev, 0, func(e jsm.Entry) error {
			out[i].Entries = append(out[i].Entries, e)
			return nil
		})
		s.background(s.queue.DropAsync(dev))
	}
	return out
}

// resyncChunk and resyncEntries bound how many devices, and how many
// queued entries, Resync copies per hold of the router's lock, so that
// routing goes on between chunks.
const (
	resyncChunk   = 128
	resyncEntries = 4096
)

// Resync hands send, for each device among devices and the streams mine
// selects, its whole replicated state: the session (when it can be
// resumed) and every entry its queue holds. The state is taken and send is
// called under the router's lock, so that the records send makes precede
// every later record of the device (send must only submit them, as the
// Replica's methods do). It is how a user's new backup gets what the old
// one held (H2). It returns the waits of the sends.
func (s *Server) Resync(devices []string, mine func(device string) bool, send func(Handover) (wait func() error)) []func() error {
	s.mu.Lock()
	seen := make(map[string]bool, len(devices))
	for _, d := range devices {
		seen[d] = true
	}
	for _, st := range s.streams {
		if mine(st.from) && !seen[st.from] {
			seen[st.from] = true
			devices = append(devices, st.from)
		}
	}
	s.mu.Unlock()
	var waits []func() error
	for len(devices) > 0 {
		chunk := devices[:min(resyncChunk, len(devices))]
		s.mu.Lock()
		streams := make(map[string]*stream, len(chunk))
		for _, dev := range chunk {
			streams[dev] = nil
		}
		for _, st := range s.streams {
			if _, ok := streams[st.from]; ok && st.resumeID != "" {
				streams[st.from] = st
			}
		}
		done, entries := 0, 0
		for _, dev := range chunk {
			w, n := s.resyncLocked(dev, streams[dev], send)
			waits = append(waits, w)
			done++
			if entries += n; entries >= resyncEntries {
				break
			}
		}
		s.mu.Unlock()
		devices = devices[done:]
	}
	return waits
}

// resyncLocked is one device of Resync; s.mu is held. st is the device's
// resumable stream, if any. It returns the send's wait and how many
// entries it copied.
func (s *Server) resyncLocked(dev string, st *stream, send func(Handover) func() error) (wait func() error, entries int) {
	h := Handover{Session: SessionState{Device: dev}}
	if err := s.queue.Read(dev, 0, func(e jsm.Entry) error {
		h.Entries = append(h.Entries, e)
		return nil
	}); err != nil {
		s.log.Error("queue read failed", "err", err)
	}
	if st == nil {
		return send(h), len(h.Entries)
	}
	// Session records of a stream go out in the order their state was
	// taken (recMu); this one too.
	st.recMu.Lock()
	defer st.recMu.Unlock()
	if !st.ended {
		h.Session = st.session()
	}
	return send(h), len(h.Entries)
}

// ResyncOffline is Resync for users' offline stores: send gets each
// user's offline messages, under the router's lock, in chunks bounded as
// Resync's.
func (s *Server) ResyncOffline(users []string, send func(user string, msgs []jsm.Entry) (wait func() error)) []func() error {
	var waits []func() error
	for len(users) > 0 {
		chunk := users[:min(resyncChunk, len(users))]
		s.mu.Lock()
		done, entries := 0, 0
		for _, u := range chunk {
			done++
			msgs, err := s.queue.ReadOffline(u)
			if err != nil {
				s.log.Error("offline read failed", "err", err)
				continue
			}
			waits = append(waits, send(u, msgs))
			if entries += len(msgs); entries >= resyncEntries {
				break
			}
		}
		s.mu.Unlock()
		users = users[done:]
	}
	return waits
}
