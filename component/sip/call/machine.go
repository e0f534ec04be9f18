package call

import (
	"slices"
	"time"

	"pushd/component/payload"
)

// Machine holds the calls of one server. It is not safe for concurrent
// use: one goroutine steps it.
type Machine struct {
	cfg   Config
	now   time.Time
	calls map[ID]*call
	byAOR map[string][]*call // in the order they came: REGISTERs find their calls without a scan
	due   due                // the calls with a deadline, earliest first
	gone  []ID               // forgotten since the last Forgotten
	out   []Action
}

type phase int

const (
	offered phase = iota // forked and pushed, the caller waiting
	up                   // answered, until the BYE
	ended                // kept until forgetAt, for late REGISTERs (C8) and retransmitted INVITEs
)

type call struct {
	id    ID
	aor   string
	phase phase
	// The offer's deadlines; zero once passed or moot.
	ringAt, giveUpAt, noAnswerAt time.Time
	forgetAt                     time.Time
	// gaveUp: GiveUpAfter passed while a branch rang; the pushed devices
	// that have not registered are no longer waited for.
	gaveUp   bool
	reason   Reason // why the offer ended, for late INVITEs
	answerer *device
	// devices in the order they joined the call, so that output is in a
	// stable order without sorting; a handful per AOR.
	devices []*device
	// at is next() as the due heap holds it, slot the call's index there
	// (-1: not in it).
	at   time.Time
	slot int
}

// leg is where a device's branch is. A device has at most one branch: a
// fresh binding replaces a branch that never rang.
type leg int

const (
	noBranch leg = iota
	pending
	ringing
	done // a final 3xx–6xx, kept in code
	cancelled
	answered
)

type device struct {
	name   string
	branch string // the binding the branch went to
	leg    leg
	code   int
	rang   bool
	pushed bool   // got the call push
	push   string // the binding it was pushed through
	failed bool   // its call push could not be delivered
	late   bool   // got its LateInvite
}

// New returns a machine; zero fields of cfg take DefaultConfig's values.
func New(cfg Config) *Machine {
	def := DefaultConfig()
	if cfg.RingAfter <= 0 {
		cfg.RingAfter = def.RingAfter
	}
	if cfg.GiveUpAfter <= 0 {
		cfg.GiveUpAfter = def.GiveUpAfter
	}
	if cfg.NoAnswerAfter <= 0 {
		cfg.NoAnswerAfter = def.NoAnswerAfter
	}
	if cfg.LateWindow <= 0 {
		cfg.LateWindow = def.LateWindow
	}
	return &Machine{cfg: cfg, calls: map[ID]*call{}, byAOR: map[string][]*call{}}
}

// Calls returns how many calls are under way: offered or up.
func (m *Machine) Calls() int {
	n := 0
	for _, c := range m.calls {
		if c.phase != ended {
			n++
		}
	}
	return n
}

// Remembered returns how many ended calls are kept for LateWindow.
func (m *Machine) Remembered() int { return len(m.calls) - m.Calls() }

// InCall reports whether a device of aor has an answered call up.
func (m *Machine) InCall(aor string) bool {
	for _, c := range m.byAOR[aor] {
		if c.phase == up {
			return true
		}
	}
	return false
}

// Next returns when the machine next wants a Tick (zero: no timer).
func (m *Machine) Next() time.Time {
	if len(m.due) == 0 {
		return time.Time{}
	}
	return m.due[0].at
}

// Forgotten returns the calls the machine forgot (LateWindow over) since
// it was last called: the runner drops what it kept for them without
// asking about every call it holds.
func (m *Machine) Forgotten() []ID {
	g := m.gone
	m.gone = nil
	return g
}

func (c *call) next() time.Time {
	switch c.phase {
	case offered:
		var next time.Time
		for _, t := range []time.Time{c.ringAt, c.giveUpAt, c.noAnswerAt} {
			if !t.IsZero() && (next.IsZero() || t.Before(next)) {
				next = t
			}
		}
		return next
	case ended:
		return c.forgetAt
	}
	return time.Time{}
}

// Step feeds one event at now and returns the actions to carry out.
// Deadlines that passed before now fall first: an event that comes after
// a deadline whose Tick was late finds the call as the deadline left it.
func (m *Machine) Step(now time.Time, ev Event) []Action {
	m.now = now
	m.out = nil
	m.fire()
	switch e := ev.(type) {
	case Invite:
		m.invite(e)
	case Registered:
		m.registered(e)
	case Provisional:
		m.provisional(e)
	case Final:
		m.final(e)
	case Cancelled:
		if c := m.calls[e.Call]; c != nil && c.phase == offered {
			m.cancel(c)
		}
	case PushFailed:
		m.pushFailed(e)
	case Hangup:
		if c := m.calls[e.Call]; c != nil && c.phase == up {
			m.hangup(c)
		}
	case Tick:
	}
	m.scheduleFor(ev)
	return m.out
}

func (m *Machine) emit(a Action) { m.out = append(m.out, a) }

// fire carries out the deadlines due by now: call by call, in the order
// each call's first one fell, and within a call in time order (its 180
// before its 480). Calls do not depend on each other's order.
func (m *Machine) fire() {
	for len(m.due) > 0 && !m.due[0].at.After(m.now) {
		c := m.due[0]
		m.fireCall(c)
		m.schedule(c)
	}
}

func (m *Machine) fireCall(c *call) {
	for {
		at := c.next()
		if at.IsZero() || at.After(m.now) {
			return
		}
		switch {
		case c.phase == ended:
			m.forget(c)
			return
		case at.Equal(c.ringAt):
			c.ringAt = time.Time{}
			m.emit(Respond{Call: c.id, Code: 180})
		case at.Equal(c.giveUpAt):
			c.giveUpAt = time.Time{}
			if c.has(func(d *device) bool { return d.leg == ringing }) {
				// Someone hears it ring: the call goes on, bounded by
				// NoAnswerAfter, but stops waiting for the pushed phones.
				c.gaveUp = true
				continue
			}
			m.endUnanswered(c, true)
		default: // noAnswerAt
			m.endUnanswered(c, true)
		}
	}
}

func (m *Machine) forget(c *call) {
	delete(m.calls, c.id)
	m.gone = append(m.gone, c.id)
	list := slices.DeleteFunc(m.byAOR[c.aor], func(o *call) bool { return o == c })
	if len(list) == 0 {
		delete(m.byAOR, c.aor)
	} else {
		m.byAOR[c.aor] = list
	}
}

func (m *Machine) invite(e Invite) {
	if m.calls[e.Call] != nil {
		return
	}
	c := &call{
		id: e.Call, aor: e.AOR, slot: -1,
		ringAt:     m.now.Add(m.cfg.RingAfter),
		giveUpAt:   m.now.Add(m.cfg.GiveUpAfter),
		noAnswerAt: m.now.Add(m.cfg.NoAnswerAfter),
	}
	m.calls[c.id] = c
	m.byAOR[c.aor] = append(m.byAOR[c.aor], c)
	// Forks first: the live devices start ringing while the pushes are
	// still on their way to the providers.
	for _, b := range e.Bindings {
		if b.Live {
			if d := c.join(b.device()); d.leg == noBranch {
				m.fork(c, d, b.ID)
			}
		}
	}
	for _, b := range e.Bindings {
		if b.Push {
			// C2: pushed even when live; the app ignores the push then.
			if d := c.join(b.device()); !d.pushed {
				d.pushed, d.push = true, b.ID
				m.emit(Push{Call: c.id, Binding: b.ID, Type: payload.TypeCall})
			}
		}
	}
	m.settle(c) // nothing forked nor pushed: 480 at once
}

func (m *Machine) fork(c *call, d *device, binding string) {
	d.branch, d.leg = binding, pending
	m.emit(Fork{Call: c.id, Binding: binding})
}

// join returns the call's device of that name, added if new.
func (c *call) join(name string) *device {
	if d := c.device(name); d != nil {
		return d
	}
	d := &device{name: name}
	c.devices = append(c.devices, d)
	return d
}

func (c *call) device(name string) *device {
	for _, d := range c.devices {
		if d.name == name {
			return d
		}
	}
	return nil
}

func (c *call) branch(binding string) *device {
	for _, d := range c.devices {
		if d.leg != noBranch && d.branch == binding {
			return d
		}
	}
	return nil
}

func (c *call) has(f func(*device) bool) bool { return slices.ContainsFunc(c.devices, f) }

func (d *device) open() bool { return d.leg == pending || d.leg == ringing }

// Registered's Binding.Live is not looked at: the REGISTER that just came
// in shows the phone reachable.
func (m *Machine) registered(e Registered) {
	name := e.Binding.device()
	for _, c := range m.byAOR[e.AOR] {
		if c.phase == offered {
			d := c.join(name)
			switch d.leg {
			case noBranch: // C3: the pushed phone is back
				m.fork(c, d, e.Binding.ID)
			case pending:
				// It never rang: the INVITE went to a contact the phone
				// has just left (a new connection, a new address).
				m.emit(CancelBranch{Call: c.id, Binding: d.branch})
				m.fork(c, d, e.Binding.ID)
			}
			continue
		}
		// C8: the call was answered or ended before this pushed phone came
		// back; its app must still have a call to report.
		if d := c.device(name); d != nil && d.pushed && !d.failed && d.leg == noBranch && !d.late {
			d.late = true
			m.emit(LateInvite{Call: c.id, Binding: e.Binding.ID, Reason: c.reason})
		}
	}
}

func (m *Machine) provisional(e Provisional) {
	c := m.calls[e.Call]
	if c == nil || c.phase != offered || e.Code <= 100 || e.Code > 199 {
		return
	}
	if d := c.branch(e.Binding); d != nil && d.leg == pending {
		d.leg, d.rang = ringing, true
		c.ringAt = time.Time{} // the caller hears the branch's 18x, relayed by the server
	}
}

func (m *Machine) final(e Final) {
	c := m.calls[e.Call]
	if c == nil || c.phase != offered {
		return // a second 2xx, or one that crossed a CANCEL: the server's to handle
	}
	d := c.branch(e.Binding)
	if d == nil || !d.open() {
		return
	}
	switch {
	case e.Code >= 200 && e.Code < 300:
		m.answer(c, d)
	case e.Code >= 600 && e.Code < 700:
		m.decline(c, d, e.Code)
	case e.Code >= 300 && e.Code < 600:
		d.leg, d.code = done, e.Code
		m.settle(c)
	}
}

func (m *Machine) pushFailed(e PushFailed) {
	c := m.calls[e.Call]
	if c == nil {
		return
	}
	for _, d := range c.devices {
		if d.pushed && d.push == e.Binding {
			d.failed = true
			if c.phase == offered {
				m.settle(c)
			}
			return
		}
	}
}

// settle ends an offered call that has nothing left to wait for: no branch
// open, and no pushed phone still expected to register.
func (m *Machine) settle(c *call) {
	if c.has((*device).open) {
		return
	}
	if !c.gaveUp && c.has(func(d *device) bool { return d.pushed && !d.failed && d.leg == noBranch }) {
		return
	}
	m.endUnanswered(c, false)
}

// endUnanswered ends an offered call nobody took (C4, C5 for the pushes):
// the timer's, or every branch failed and no pushed phone is awaited.
func (m *Machine) endUnanswered(c *call, byTimer bool) {
	m.cancelBranches(c, ReasonNone)
	m.pushOthers(c, nil, payload.TypeMissedCall)
	code, binding := c.best(byTimer)
	m.emit(Respond{Call: c.id, Code: code, Binding: binding})
	m.finish(c, ReasonNone)
}

func (m *Machine) cancel(c *call) {
	m.cancelBranches(c, ReasonNone)
	for _, d := range c.devices {
		if d.pushed && !d.failed {
			typ := payload.TypeMissedCall
			if d.rang {
				typ = payload.TypeCancelled // C5: it rang, the user saw the call go
			}
			m.emit(Push{Call: c.id, Binding: d.push, Type: typ})
		}
	}
	m.emit(Respond{Call: c.id, Code: 487})
	m.finish(c, ReasonNone)
}

func (m *Machine) answer(c *call, d *device) {
	d.leg = answered
	m.cancelBranches(c, ReasonAnsweredElsewhere)
	m.pushOthers(c, d, payload.TypeAnsweredElsewhere) // C6
	if !m.deviceUp(c.aor, d.name) {
		m.emit(InCall{AOR: c.aor, Device: d.name, Up: true})
	}
	c.phase, c.answerer, c.reason = up, d, ReasonAnsweredElsewhere
	c.ringAt, c.giveUpAt, c.noAnswerAt = time.Time{}, time.Time{}, time.Time{}
}

func (m *Machine) hangup(c *call) {
	m.finish(c, c.reason)
	if !m.deviceUp(c.aor, c.answerer.name) {
		m.emit(InCall{AOR: c.aor, Device: c.answerer.name, Up: false})
	}
}

// deviceUp reports whether the device has an answered call of aor up.
func (m *Machine) deviceUp(aor, name string) bool {
	for _, c := range m.byAOR[aor] {
		if c.phase == up && c.answerer.name == name {
			return true
		}
	}
	return false
}

// decline: a 6xx ends the call at once for every branch (RFC 3261 §16.7).
func (m *Machine) decline(c *call, d *device, code int) {
	d.leg, d.code = done, code
	m.cancelBranches(c, ReasonDeclinedElsewhere)
	m.pushOthers(c, d, payload.TypeDeclinedElsewhere)
	m.emit(Respond{Call: c.id, Code: code, Binding: d.branch})
	m.finish(c, ReasonDeclinedElsewhere)
}

// cancelBranches cancels every open branch (the one that ended the call
// is not open any more).
func (m *Machine) cancelBranches(c *call, r Reason) {
	for _, d := range c.devices {
		if d.open() {
			d.leg = cancelled
			m.emit(CancelBranch{Call: c.id, Binding: d.branch, Reason: r})
		}
	}
}

// pushOthers sends the end-of-call push to every pushed device but the one
// that ended the call and those whose call push never arrived.
func (m *Machine) pushOthers(c *call, except *device, t payload.Type) {
	for _, d := range c.devices {
		if d != except && d.pushed && !d.failed {
			m.emit(Push{Call: c.id, Binding: d.push, Type: t})
		}
	}
}

func (m *Machine) finish(c *call, r Reason) {
	c.phase, c.reason = ended, r
	c.ringAt, c.giveUpAt, c.noAnswerAt = time.Time{}, time.Time{}, time.Time{}
	c.forgetAt = m.now.Add(m.cfg.LateWindow)
}

// best picks the caller's final response for a call that ends unanswered
// and undeclined, after RFC 3261 §16.7 simplified: the lowest class among
// the branches' 3xx–5xx wins; within 4xx, 486 Busy Here goes first (the
// caller learns the callee is there), then the other 4xx, then 480, then
// 408; within 5xx, 503 goes last; between equals the first device in call
// order. pushd's own 480
// competes when a pushed phone never got a branch or a timer ended the
// call (the branches it cancelled count as unavailable), losing to a
// branch's 480. A best 503 becomes pushd's own 500: a 503 would tell the
// caller that pushd itself is overloaded (§16.7 step 6).
func (c *call) best(byTimer bool) (code int, binding string) {
	local := byTimer || c.has(func(d *device) bool { return d.pushed && d.leg == noBranch })
	var best *device
	for _, d := range c.devices {
		if d.leg == done && d.code >= 300 && d.code < 600 && (best == nil || rank(d.code) < rank(best.code)) {
			best = d
		}
	}
	switch {
	case best == nil || local && rank(480) < rank(best.code):
		return 480, ""
	case best.code == 503:
		return 500, ""
	}
	return best.code, best.branch
}

func rank(code int) int {
	pref := 1
	switch code {
	case 486:
		pref = 0
	case 480, 503:
		pref = 2
	case 408:
		pref = 3
	}
	return code/100*10 + pref
}
