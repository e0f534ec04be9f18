package jsm

import (
	"slices"

	"pushd/internal/stanza"
)

// The suspended state (BEHAVIOUR M2, M4, M5, M6, M9).
//
// A device is suspended while its stream is detached (XEP-0198
// hibernation, or restored at start without a stream) or while it is
// XEP-0352 inactive and has a push registration. An inactive device
// without a registration is not suspended: it keeps getting stanzas live.
// While suspended, every stanza for the device is queued (M2) and may
// trigger a notification (M3, push.go); when it stops being suspended the
// queue is flushed before anything newer (M5).

// reconcile brings d.susp up to date after anything that can change it:
// detach, resume, takeover, client state, registrations.
func (m *Machine) reconcile(d *device) {
	s := d.detached || (!d.active && m.hasRegs(d))
	if s == d.susp {
		return
	}
	d.susp = s
	ps := d.user.push[d.key]
	if s {
		if ps != nil {
			ps.reset() // message-count starts again (M3)
		}
	} else {
		if ps != nil {
			m.cancelPush(ps) // nothing is published once it is back (M5)
		}
		m.flushQueue(d)
	}
	m.updateAway(d.user, nil)
}

// enqueue appends st to the suspended device's queue within the bounds
// of M9, and counts it for the device's next notification (M3).
func (m *Machine) enqueue(d *device, st *stanza.Element) bool {
	if !m.queueEntry(d, st, true) {
		return false
	}
	m.trigger(d, Entry{Seq: d.seq, Stanza: st})
	return true
}

// queueEntry gives st the device's next Seq and appends it to the queue,
// within the bounds of M9 when bounded; it reports false when st was
// refused.
func (m *Machine) queueEntry(d *device, st *stanza.Element, bounded bool) bool {
	size := m.sizeOf(st)
	pres := st.Name.Local == "presence"
	if bounded && !m.makeRoom(d, size) {
		// Presence is lost news and may go; a message never silently
		// (M9): its sender is told to try later. Carbon copies are the
		// user's own, and IQs to a suspended device were answered.
		if st.Name.Local == "message" && !isCarbon(st) && m.refused != st {
			m.refused = st
			m.bounce(st, "wait", "resource-constraint")
		}
		return false
	}
	d.seq++
	d.qHigh = d.seq
	m.addQ(d, d.seq, size, pres)
	m.emit(Enqueue{Device: d.key, Entries: []Entry{{Seq: d.seq, Stanza: st}}})
	return true
}

// makeRoom reports whether one more entry of size bytes fits in d's queue,
// evicting the oldest queued presence stanzas if that makes it fit (M9).
// Nothing is evicted when even that would not be enough.
func (m *Machine) makeRoom(d *device, size int64) bool {
	count, bytes := d.qCount+d.restoredCount+1, d.qBytes+d.restoredBytes+size
	maxN, maxB := m.cfg.MaxQueueEntries, m.cfg.MaxQueueBytes
	if count <= maxN && bytes <= maxB {
		return true
	}
	n := 0
	for _, q := range d.qents {
		if count <= maxN && bytes <= maxB {
			break
		}
		if q.presence && !handed(d, q.seq) {
			count--
			bytes -= q.size
			n++
		}
	}
	if count > maxN || bytes > maxB {
		return false
	}
	seqs := make([]uint64, 0, n)
	d.qents = slices.DeleteFunc(d.qents, func(q qent) bool {
		if len(seqs) < n && q.presence && !handed(d, q.seq) {
			seqs = append(seqs, q.seq)
			d.qCount--
			d.qBytes -= q.size
			return true
		}
		return false
	})
	m.emit(Remove{Device: d.key, Seqs: seqs})
	return true
}

// handed reports whether the entry is on the device's live stream, which
// cannot take it back: evicting it would also break the prefix a backup
// counts the client's acknowledgements against (send).
func handed(d *device, seq uint64) bool {
	return d.stream != 0 && !d.detached && seq <= d.sent
}

// addQ records an entry written to d's queue, keeping qents in Seq order.
func (m *Machine) addQ(d *device, seq uint64, size int64, presence bool) {
	q := qent{seq: seq, size: size, presence: presence}
	if n := len(d.qents); n == 0 || d.qents[n-1].seq < seq {
		d.qents = append(d.qents, q)
	} else {
		i, found := slices.BinarySearchFunc(d.qents, seq, func(e qent, s uint64) int {
			return cmpU64(e.seq, s)
		})
		if found {
			return
		}
		d.qents = slices.Insert(d.qents, i, q)
	}
	d.qCount++
	d.qBytes += size
}

// trimQ forgets the entries through seq.
func (m *Machine) trimQ(d *device, through uint64) {
	i := 0
	for i < len(d.qents) && d.qents[i].seq <= through {
		d.qCount--
		d.qBytes -= d.qents[i].size
		i++
	}
	d.qents = slices.Delete(d.qents, 0, i)
	if through >= d.restoredLast {
		d.restoredCount, d.restoredBytes = 0, 0
	}
	if len(d.qents) == 0 {
		d.qents = nil // give the memory back once the queue is empty
	}
}

// sizeOf is st's size in bytes: as received when the router said so, else
// as serialised.
func (m *Machine) sizeOf(st *stanza.Element) int64 {
	if st == m.inStanza && m.inSize > 0 {
		return int64(m.inSize)
	}
	return int64(len(stanza.Marshal(st, stanza.NSClient)))
}

func isCarbon(st *stanza.Element) bool {
	return st.Child(stanza.NSCarbons, "received") != nil || st.Child(stanza.NSCarbons, "sent") != nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// --- M4: away while every device is suspended ---

// updateAway shows contacts every available device of u as away when all
// of them are suspended, and their own presence again when one is not
// (M4). A user without an available device is simply unavailable. skip is
// a device whose presence the caller broadcasts itself.
func (m *Machine) updateAway(u *user, skip *device) {
	any, all := false, true
	for _, d := range u.devices {
		if d.available {
			any = true
			if !d.susp {
				all = false
				break
			}
		}
	}
	away := any && all
	if away == u.away {
		return
	}
	u.away = away
	for _, d := range u.devices {
		if !d.available || d == skip || d.lastPresence == nil || d.show == "away" || d.show == "xa" {
			continue // nothing that contacts see changes
		}
		m.toContacts(d, m.shown(d, d.lastPresence))
	}
}

// shown is the presence contacts see for d's presence st: st itself, or,
// while the user is away (M4), st with <show>away</show> (status, priority
// and the rest kept). xa stays xa.
func (m *Machine) shown(d *device, st *stanza.Element) *stanza.Element {
	if !d.user.away || st == nil || st.Get("type") != "" || d.show == "away" || d.show == "xa" {
		return st
	}
	if d.awayFor == st {
		return d.awayPres
	}
	c := &stanza.Element{Name: st.Name, Attr: st.Attr}
	show := stanza.New(stanza.NSClient, "show").AddText("away")
	c.Children = make([]stanza.Node, 0, len(st.Children)+1)
	done := false
	for _, n := range st.Children {
		if e, ok := n.(*stanza.Element); ok && e.Is(stanza.NSClient, "show") {
			if !done {
				c.Children = append(c.Children, show)
				done = true
			}
			continue
		}
		c.Children = append(c.Children, n)
	}
	if !done {
		c.Children = append([]stanza.Node{show}, c.Children...)
	}
	d.awayFor, d.awayPres = st, c
	return c
}

// toContacts sends st to the contacts subscribed to d's user.
func (m *Machine) toContacts(d *device, st *stanza.Element) {
	u := d.user
	for _, k := range u.order {
		it := u.roster[k]
		if !hasFrom(it.Subscription) {
			continue
		}
		dom := it.JID.Domainpart()
		if dom != m.domain && !m.isComponent(dom) {
			continue // unreachable contact: no error for a broadcast
		}
		m.route(withAttrs(st, "to", k), d.jid)
	}
}

// --- M6, M7: which suspended device is pushed ---

// pushable applies the last-active-session rule to a suspended device with
// a registration (M6): a desktop device is pushed (it asked for it); a
// mobile one only when it is in a call (M7), or (a) it was the device the
// user last used, or (b) every desktop device has been idle for over
// DesktopIdle, or (c) no desktop device is signed in.
func (m *Machine) pushable(d *device) bool {
	if d.kind != Mobile {
		return true
	}
	u := d.user
	if u.inCall[d.key] || u.inCall[""] || u.lastDevice == d.key {
		return true
	}
	for _, o := range u.devices {
		if o.kind == Desktop && !m.idle(o) {
			return false
		}
	}
	return true
}

// idle says whether a device has been inactive for over DesktopIdle: CSI
// inactive or detached that long, or no stanza from it that long.
func (m *Machine) idle(d *device) bool {
	since := d.lastActive
	if d.detached || !d.active {
		since = d.inactiveSince
	}
	return m.now.Sub(since) > m.cfg.DesktopIdle
}

// interacts says whether a stanza from the client is the user's doing, for
// M6: keepalive pings and IQ answers are the client's own.
func interacts(st *stanza.Element) bool {
	if st.Name.Local != "iq" {
		return true
	}
	switch st.Get("type") {
	case "get", "set":
		q := st.FirstElement()
		return q == nil || !q.Is(stanza.NSPing, "ping")
	}
	return false
}
