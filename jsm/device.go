package jsm

import (
	"slices"
	"strings"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
)

// user is one local account.
type user struct {
	bare    jid.JID
	bareStr string
	devices []*device // ordered by resource, so output is deterministic

	roster map[string]*RosterItem // by contact bare JID string
	order  []string               // roster keys, sorted

	offline        int  // messages in the offline store, as far as jsm knows
	offlineUnknown bool // restored without a count: ask the store at login
	flushing       bool // a FlushOffline is out, its OfflineLoaded not back

	// away: contacts are shown every available device as away because all
	// of them are suspended (M4).
	away bool
	// push holds the XEP-0357 registrations by device full JID string. It
	// outlives the device: a device gone without a clean logout keeps its
	// registrations (M8), and messages stored offline are pushed to them.
	push map[string]*pushState
	// lastDevice is the device key that last sent the user's own stanza
	// (M6 (a)).
	lastDevice string
	// inCall: device keys in a call per the SIP side; "" means every
	// mobile device (M7).
	inCall map[string]bool
}

// device is one bound full JID. Its queue lives in the queue store; jsm
// keeps only the counters that say what is in it.
type device struct {
	user   *user
	jid    jid.JID
	key    string // full JID string: the queue's name
	stream StreamID
	kind   Kind

	detached bool      // XEP-0198 hibernation (stream 0: restored at start, no stream)
	expires  time.Time // end of hibernation
	active   bool      // XEP-0352 state
	// susp: the device is suspended (detached, or CSI-inactive with a
	// push registration): nothing is written to it, everything is queued
	// (M2). Kept current by reconcile.
	susp bool
	// inactiveSince is when the device last became CSI-inactive or
	// detached (M6 (b)).
	inactiveSince time.Time

	seq     uint64 // last Seq assigned
	acked   uint64 // highest Seq the client acknowledged
	sent    uint64 // highest Seq written to the current stream
	qHigh   uint64 // highest Seq ever enqueued
	qLow    uint64 // every Seq <= qLow has been trimmed from the queue
	carbons bool
	// kept: the stream manages acknowledgements (Managed), so what is
	// written to it live is queued as well until the client acks it.
	kept bool

	// Queue bounds (M9): what the queue holds above qLow. qents lists the
	// entries jsm enqueued (Seq, size, presence or not); restored counts
	// the entries found at start, whose sizes jsm does not know, through
	// restoredLast.
	qents         []qent
	qCount        int
	qBytes        int64
	restoredCount int
	restoredBytes int64
	restoredLast  uint64

	rosterRequested bool // "interested resource" for roster pushes (RFC 6121 §2.1.6)

	// Presence. available is set by initial presence and cleared by
	// unavailable; a suspended device stays available (contacts see it
	// away while all the user's devices are, M4).
	available    bool
	priority     int
	show, status string
	lastPresence *stanza.Element
	directed     map[string]bool // JIDs sent directed presence (RFC 6121 §4.6)
	lastActive   time.Time       // last stanza from the client (M6 (b))
	awayFor      *stanza.Element // the lastPresence awayPres was made from
	awayPres     *stanza.Element // lastPresence shown as away (M4)
}

// qent is one queued entry as jsm tracks it for the bounds of M9.
type qent struct {
	seq      uint64
	size     int64
	presence bool
}

func (d *device) queued() bool { return d.qHigh > d.qLow }

func (u *user) device(resource string) *device {
	for _, d := range u.devices {
		if d.jid.Resourcepart() == resource {
			return d
		}
	}
	return nil
}

func (u *user) addDevice(d *device) {
	i, _ := slices.BinarySearchFunc(u.devices, d.jid.Resourcepart(), func(e *device, r string) int {
		return strings.Compare(e.jid.Resourcepart(), r)
	})
	u.devices = slices.Insert(u.devices, i, d)
}

func (u *user) removeDevice(d *device) {
	if i := slices.Index(u.devices, d); i >= 0 {
		u.devices = slices.Delete(u.devices, i, i+1)
	}
}

// send gives st the device's next Seq and writes it to the live stream, or
// to the queue while the device is suspended (M2). Every stanza for a
// device goes through here, so the Seq order is the delivery order. It
// reports false when the queue is full and st was refused (M9).
//
// A kept device's stanza is queued and written: the Enqueue comes first,
// so its sender's acknowledgement waits for it (DESIGN rule 2), and what
// the stream was handed is always a prefix of the queue in Seq order,
// which is how a backup maps the client's XEP-0198 count to Seqs (H4).
// The bounds of M9 do not apply to it: they keep a suspended device's
// backlog in check, while this is the stream's own window of
// unacknowledged stanzas, which the router holds anyway; refusing in it
// would hold back even the answers the client waits for to acknowledge.
func (m *Machine) send(d *device, st *stanza.Element) bool {
	if d.susp {
		return m.enqueue(d, st)
	}
	if d.kept {
		m.queueEntry(d, st, false)
	} else {
		d.seq++
	}
	d.sent = d.seq
	m.emit(Deliver{Stream: d.stream, Entry: Entry{Seq: d.seq, Stanza: st}})
	return true
}

// stepBound binds a new device or hands an existing one to a new stream
// (M5: resource takeover).
func (m *Machine) stepBound(e Bound) {
	if m.streams[e.Stream] != nil {
		return // already bound: a router retry
	}
	u := m.user(e.JID)
	if u == nil || e.JID.Resourcepart() == "" {
		m.emit(CloseStream{Stream: e.Stream, Condition: "not-authorized"})
		return
	}
	res := e.JID.Resourcepart()
	d := u.device(res)
	if d == nil {
		d = &device{user: u, jid: e.JID, key: e.JID.String(), stream: e.Stream, active: true}
		if ps := u.push[d.key]; ps != nil {
			// Registrations left by an earlier session of this resource
			// (M8: an unclean disconnect keeps them).
			m.cancelPush(ps)
		}
		if dr, ok := m.draining[d.key]; ok {
			// The old device's queue is still being read: keep Seqs above
			// it so the store's dedup cannot swallow new entries.
			d.seq, d.qLow, d.qHigh = dr.lastSeq, dr.lastSeq, dr.lastSeq
		}
		u.addDevice(d)
	} else {
		// Takeover. A live old stream gets a conflict stream error (RFC
		// 6120 §4.9.3.3); a detached one is just forgotten, as the client
		// chose a new stream over resuming it.
		cond := "conflict"
		if d.detached {
			cond = ""
		}
		if d.stream != 0 {
			m.emit(CloseStream{Stream: d.stream, Condition: cond})
			delete(m.streams, d.stream)
		}
		// The new stream is a new session: contacts see the old one leave
		// and the client's initial presence will announce it again.
		m.unavailable(d, nil)
		d.stream, d.detached, d.active, d.sent = e.Stream, false, true, 0
		d.carbons, d.rosterRequested, d.kept = false, false, false
		delete(m.hib, d.key)
		// Queued stanzas go out first, before anything newer (M5).
		m.reconcile(d)
		m.flushQueue(d)
	}
	d.kind = m.kindOf(res, "")
	d.lastActive = m.now
	u.lastDevice = d.key
	m.streams[e.Stream] = d
}

// flushQueue writes what the device's queue holds beyond what its stream
// already has, in order (M5).
func (m *Machine) flushQueue(d *device) {
	if d.stream == 0 || !d.queued() {
		return
	}
	from := max(d.sent, d.acked, d.qLow) + 1
	if from > d.qHigh {
		return
	}
	m.emit(Flush{Stream: d.stream, Device: d.key, From: from})
	d.sent = d.qHigh
}

// stepDetached starts hibernation: from now on stanzas are queued, and
// what the client never acknowledged is queued again with its own Seq.
func (m *Machine) stepDetached(e Detached) {
	d := m.streams[e.Stream]
	if d == nil || d.detached {
		return
	}
	d.detached = true
	if d.active {
		d.inactiveSince = m.now
	}
	m.hibernate(d, m.now)
	// unseen: written, never acknowledged; entries: those of them the
	// queue does not hold yet (a kept device's are all there).
	var unseen, entries []Entry
	for _, en := range e.Unacked {
		if en.Seq <= d.acked || en.Seq <= d.qLow {
			continue
		}
		unseen = append(unseen, en)
		if d.kept && en.Seq <= d.qHigh {
			continue
		}
		entries = append(entries, en)
		d.qHigh = max(d.qHigh, en.Seq)
		m.addQ(d, en.Seq, m.sizeOf(en.Stanza), en.Stanza.Name.Local == "presence")
	}
	if len(entries) > 0 {
		m.emit(Enqueue{Device: d.key, Entries: entries})
	}
	m.reconcile(d)
	// What the client never acknowledged was never seen: it counts for
	// the notification like anything queued from now on (M3).
	m.trigger(d, unseen...)
}

// hibernate sets the device's hibernation deadline from since (M10).
func (m *Machine) hibernate(d *device, since time.Time) {
	timeout := m.cfg.ResumeTimeout
	if m.hasRegs(d) {
		timeout = m.cfg.PushResumeTimeout
	}
	d.expires = since.Add(timeout)
	m.hib[d.key] = d
	if m.nextExpiry.IsZero() || d.expires.Before(m.nextExpiry) {
		m.nextExpiry = d.expires
	}
}

// stepResumed ends hibernation: the queue is trimmed to what the client
// says it has and the rest is flushed before anything newer (M5).
func (m *Machine) stepResumed(e Resumed) {
	d := m.streams[e.Stream]
	if d == nil {
		// Expired (perhaps by this very Step): make sure the router knows
		// the resumption failed.
		if !slices.Contains(m.out, Action(CloseStream{Stream: e.Stream})) {
			m.emit(CloseStream{Stream: e.Stream})
		}
		return
	}
	d.detached, d.active = false, true
	delete(m.hib, d.key)
	d.lastActive = m.now
	d.user.lastDevice = d.key
	m.ack(d, e.AckedSeq)
	d.sent = d.acked // the new connection has nothing yet
	m.reconcile(d)
	m.flushQueue(d)
}

// stepClientState records XEP-0352 <active/> and <inactive/>: an
// inactive device with a push registration is suspended (M2); <active/>
// ends that and flushes its queue (M5).
func (m *Machine) stepClientState(e ClientState) {
	d := m.streams[e.Stream]
	if d == nil || d.active == e.Active {
		return
	}
	d.active = e.Active
	if e.Active {
		d.lastActive = m.now
		d.user.lastDevice = d.key
	} else {
		d.inactiveSince = m.now
	}
	m.reconcile(d)
}

func (m *Machine) stepAcked(e Acked) {
	if d := m.streams[e.Stream]; d != nil {
		m.ack(d, e.Seq)
	}
}

// ack records the client's acknowledgement and trims what it covers from
// the queue; entries it does not cover stay until they are acknowledged,
// so a crash between flush and ack loses nothing (H2).
func (m *Machine) ack(d *device, seq uint64) {
	seq = min(seq, d.seq) // a client cannot ack what was never sent
	if seq > d.acked {
		d.acked = seq
	}
	if d.queued() && d.acked > d.qLow {
		d.qLow = min(d.acked, d.qHigh)
		m.trimQ(d, d.qLow)
		m.emit(Trim{Device: d.key, Through: d.qLow})
	}
}

func (m *Machine) stepClosed(e Closed) {
	if d := m.streams[e.Stream]; d != nil {
		if e.Clean {
			m.dropRegs(d.user, d.key) // M8: a clean logout ends push
		}
		m.gone(d, e.Unacked)
	}
}

// expire ends the hibernation of every device whose deadline has passed
// (M10): the stream is closed and the device is gone.
func (m *Machine) expire() {
	if m.nextExpiry.IsZero() || m.now.Before(m.nextExpiry) {
		return
	}
	var due []*device
	m.nextExpiry = time.Time{}
	for _, d := range m.hib {
		if !m.now.Before(d.expires) {
			due = append(due, d)
		} else if m.nextExpiry.IsZero() || d.expires.Before(m.nextExpiry) {
			m.nextExpiry = d.expires
		}
	}
	// Map order is random; the output must not be.
	slices.SortFunc(due, func(a, b *device) int {
		if c := a.expires.Compare(b.expires); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	for _, d := range due {
		if d.stream != 0 {
			m.emit(CloseStream{Stream: d.stream})
		}
		m.gone(d, nil)
	}
}

// gone removes a device for good: contacts see it leave, and messages it
// never acknowledged move to the offline store (M10) — the ones in the
// queue through LoadQueue, the ones only the router held from unacked.
func (m *Machine) gone(d *device, unacked []Entry) {
	m.unavailable(d, nil)
	if d.stream != 0 {
		delete(m.streams, d.stream)
	}
	delete(m.hib, d.key)
	d.user.removeDevice(d)
	d.susp = false
	if ps := d.user.push[d.key]; ps != nil {
		// The registrations stay (M8); what was queued goes offline and
		// will be pushed from there.
		ps.pending = false
	}
	if d.queued() {
		var rest []Entry
		for _, en := range unacked {
			if en.Seq > d.qHigh {
				rest = append(rest, en)
			}
		}
		if len(rest) > 0 {
			m.emit(Enqueue{Device: d.key, Entries: rest})
		}
		m.draining[d.key] = drain{user: d.user, acked: d.acked, lastSeq: d.seq}
		m.emit(LoadQueue{Device: d.key})
		return
	}
	for _, en := range unacked {
		if en.Seq > d.acked {
			m.toOffline(d.user, en.Stanza)
		}
	}
	if d.qHigh > 0 {
		m.emit(DropQueue{Device: d.key})
	}
}

// stepQueueLoaded moves a gone device's queued messages offline, then
// drops the queue.
func (m *Machine) stepQueueLoaded(e QueueLoaded) {
	dr, ok := m.draining[e.Device]
	if !ok {
		return
	}
	delete(m.draining, e.Device)
	for _, en := range e.Entries {
		if en.Seq > dr.acked {
			m.toOffline(dr.user, en.Stanza)
		}
	}
	m.emit(DropQueue{Device: e.Device})
}

// kindOf decides mobile or desktop: the XEP-0115 caps node names the
// client software, which is the better signal; a resource prefix is the
// fallback for clients without caps (M6 needs the kind).
func (m *Machine) kindOf(resource, capsNode string) Kind {
	if capsNode != "" && hasPrefixAny(capsNode, m.cfg.MobileCapsNodes) {
		return Mobile
	}
	if hasPrefixAny(resource, m.cfg.MobileResourcePrefixes) {
		return Mobile
	}
	return Desktop
}
