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
}

// device is one bound full JID. Its queue lives in the queue store; jsm
// keeps only the counters that say what is in it.
type device struct {
	user   *user
	jid    jid.JID
	key    string // full JID string: the queue's name
	stream StreamID
	kind   Kind

	detached bool      // XEP-0198 hibernation: stanzas go to the queue
	expires  time.Time // end of hibernation
	active   bool      // XEP-0352; kept for the suspended rule (M2, M4)

	seq     uint64 // last Seq assigned
	acked   uint64 // highest Seq the client acknowledged
	qHigh   uint64 // highest Seq ever enqueued
	qLow    uint64 // every Seq <= qLow has been trimmed from the queue
	carbons bool

	rosterRequested bool // "interested resource" for roster pushes (RFC 6121 §2.1.6)

	// Presence. available is set by initial presence and cleared by
	// unavailable; a detached device stays available (M4 comes later and
	// will use lastPresence to restore the user's own choice).
	available    bool
	priority     int
	show, status string
	lastPresence *stanza.Element
	directed     map[string]bool // JIDs sent directed presence (RFC 6121 §4.6)
	lastActive   time.Time       // last stanza from the client (for M6 later)
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
// to the queue while the device is detached (M2). Every stanza for a
// device goes through here, so the Seq order is the delivery order.
func (m *Machine) send(d *device, st *stanza.Element) {
	d.seq++
	e := Entry{Seq: d.seq, Stanza: st}
	if d.detached {
		d.qHigh = d.seq
		m.emit(Enqueue{Device: d.key, Entries: []Entry{e}})
		return
	}
	m.emit(Deliver{Stream: d.stream, Entry: e})
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
		m.emit(CloseStream{Stream: d.stream, Condition: cond})
		delete(m.streams, d.stream)
		// The new stream is a new session: contacts see the old one leave
		// and the client's initial presence will announce it again.
		m.unavailable(d, nil)
		d.stream, d.detached, d.active = e.Stream, false, true
		d.carbons, d.rosterRequested = false, false
		if d.queued() {
			// Queued stanzas go out first, before anything newer (M5).
			m.emit(Flush{Stream: e.Stream, Device: d.key, From: max(d.acked, d.qLow) + 1})
		}
	}
	d.kind = m.kindOf(res, "")
	d.lastActive = m.now
	m.streams[e.Stream] = d
}

// stepDetached starts hibernation: from now on stanzas are queued, and
// what the client never acknowledged is queued again with its own Seq.
func (m *Machine) stepDetached(e Detached) {
	d := m.streams[e.Stream]
	if d == nil || d.detached {
		return
	}
	d.detached = true
	d.expires = m.now.Add(m.cfg.ResumeTimeout)
	if m.nextExpiry.IsZero() || d.expires.Before(m.nextExpiry) {
		m.nextExpiry = d.expires
	}
	var entries []Entry
	for _, en := range e.Unacked {
		if en.Seq > d.acked && en.Seq > d.qLow {
			entries = append(entries, en)
			d.qHigh = max(d.qHigh, en.Seq)
		}
	}
	if len(entries) > 0 {
		m.emit(Enqueue{Device: d.key, Entries: entries})
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
	d.detached = false
	d.lastActive = m.now
	m.ack(d, e.AckedSeq)
	if d.queued() {
		m.emit(Flush{Stream: d.stream, Device: d.key, From: max(d.acked, d.qLow) + 1})
	}
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
		m.emit(Trim{Device: d.key, Through: d.qLow})
	}
}

func (m *Machine) stepClosed(e Closed) {
	if d := m.streams[e.Stream]; d != nil {
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
	for _, d := range m.streams {
		if !d.detached {
			continue
		}
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
		m.emit(CloseStream{Stream: d.stream})
		m.gone(d, nil)
	}
}

// gone removes a device for good: contacts see it leave, and messages it
// never acknowledged move to the offline store (M10) — the ones in the
// queue through LoadQueue, the ones only the router held from unacked.
func (m *Machine) gone(d *device, unacked []Entry) {
	m.unavailable(d, nil)
	delete(m.streams, d.stream)
	d.user.removeDevice(d)
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
