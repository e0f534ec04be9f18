package jsm

import (
	"container/heap"
	"encoding/base64"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
)

// XEP-0357 server side (BEHAVIOUR M3, M8): registrations, notification
// triggers with coalescing, publishes and what their answers mean. The
// form is the one Prosody's mod_cloud_notify publishes, so that an app
// server that works with Prosody works with pushd.

const (
	nsPubSub    = "http://jabber.org/protocol/pubsub"
	nsData      = "jabber:x:data"
	nsEncrypt   = "tigase:push:encrypt:0"
	pushSummary = "urn:xmpp:push:summary"

	// pushTimeout: a publish not answered by then counts as a wait error.
	pushTimeout = 30 * time.Second
	// pushTries bounds the publishes of one notification (first + retries
	// after wait errors); backoff doubles from 1 s up to pushMaxBackoff.
	pushTries      = 5
	pushMaxBackoff = 60 * time.Second
	// adoptPushDelay: how long an adopted device's first notification
	// waits for the stanzas held during the takeover (senders retry a
	// dead node at most every 250 ms).
	adoptPushDelay = 500 * time.Millisecond
)

// pushState is one device's registrations and the notification being
// gathered for it. It is kept by device key on the user, so it outlives
// the device itself (M8).
type pushState struct {
	user *user
	key  string
	regs []*reg

	// The summary since the device was suspended or last flushed.
	count, subs             int
	sender, nick, body, typ string

	windowEnd time.Time // no publish before this (coalescing, M3)
	pending   bool      // a trigger waits for windowEnd

	// queued is the highest Seq a trigger saw, pushed the highest Seq a
	// publish the app server took covered: what a backup must still push
	// for after a failover lies between them (Adopt.Unpushed).
	queued, pushed uint64
}

func (ps *pushState) reset() {
	ps.count, ps.subs = 0, 0
	ps.sender, ps.nick, ps.body, ps.typ = "", "", "", ""
}

// reg is one registration and its retry state.
type reg struct {
	Registration
	latest  string       // id of the newest publish to it
	retry   *publication // the publish to send again at retryAt
	retryAt time.Time
}

// publication is a publish waiting for its answer.
type publication struct {
	id       string
	ps       *pushState
	reg      *reg
	act      Publish // as emitted; sent again with a new id on retry
	tries    int
	deadline time.Time
}

// hasRegs reports whether the device has a push registration.
func (m *Machine) hasRegs(d *device) bool {
	ps := d.user.push[d.key]
	return ps != nil && len(ps.regs) > 0
}

// --- enable / disable ---

// pushIQ serves <enable/> and <disable/> from the user's own device.
func (m *Machine) pushIQ(d *device, st, q *stanza.Element) {
	if st.Get("type") != "set" {
		m.bounce(st, "modify", "bad-request")
		return
	}
	app, err := jid.Parse(q.Get("jid"))
	if err != nil || q.Get("jid") == "" || app.Equal(d.jid) || app.Equal(d.user.bare) {
		m.bounce(st, "modify", "bad-request") // XEP-0357 §5, as Prosody
		return
	}
	node := q.Get("node")
	u := d.user
	if q.Name.Local == "disable" {
		// §6: every registration of the account for that app server (and
		// node, if given), whichever device left it, as Prosody does.
		for _, k := range slices.Sorted(maps.Keys(u.push)) {
			ps := u.push[k]
			for _, r := range slices.Clone(ps.regs) {
				if r.AppServer.Equal(app) && (node == "" || r.Node == node) {
					m.removeReg(ps, r)
				}
			}
		}
		m.route(iqResult(st), u.bare)
		return
	}
	r := Registration{AppServer: app, Node: node}
	if x := q.Child(nsData, "x"); x != nil {
		r.Options = x.Copy()
	}
	if enc := q.Child(nsEncrypt, "encrypt"); enc != nil {
		alg := enc.Get("alg")
		want := map[string]int{"aes-128-gcm": 16, "aes-256-gcm": 32}[alg]
		if want == 0 {
			m.bounce(st, "cancel", "feature-not-implemented")
			return
		}
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc.Text()))
		if err != nil || len(key) != want {
			m.bounce(st, "modify", "bad-request")
			return
		}
		r.Encrypt = &Encryption{Alg: alg, Key: key}
	}
	// One app server node belongs to one device: a registration of the
	// same node by another device (a reinstalled app) moves here.
	for _, k := range slices.Sorted(maps.Keys(u.push)) {
		if k == d.key {
			continue
		}
		ps := u.push[k]
		for _, o := range slices.Clone(ps.regs) {
			if o.AppServer.Equal(app) && o.Node == node {
				m.removeReg(ps, o)
			}
		}
	}
	ps := m.pushStateOf(u, d.key)
	i := slices.IndexFunc(ps.regs, func(o *reg) bool { return o.AppServer.Equal(app) && o.Node == node })
	if i >= 0 {
		ps.regs[i] = &reg{Registration: r}
	} else {
		ps.regs = append(ps.regs, &reg{Registration: r})
	}
	m.emit(SaveRegistration{Device: d.key, Registration: r})
	m.route(iqResult(st), u.bare)
	if d.detached {
		m.hibernate(d, d.inactiveSince) // M10: the longer timeout now applies
	}
	m.reconcile(d) // an inactive device is suspended from now on
}

func (m *Machine) pushStateOf(u *user, key string) *pushState {
	ps := u.push[key]
	if ps == nil {
		if u.push == nil {
			u.push = make(map[string]*pushState)
		}
		ps = &pushState{user: u, key: key}
		u.push[key] = ps
	}
	return ps
}

// removeReg forgets one registration and persists that.
func (m *Machine) removeReg(ps *pushState, r *reg) {
	i := slices.Index(ps.regs, r)
	if i < 0 {
		return
	}
	ps.regs = slices.Delete(ps.regs, i, i+1)
	m.emit(DeleteRegistration{Device: ps.key, AppServer: r.AppServer, Node: r.Node})
	r.retry, r.retryAt = nil, time.Time{}
	u := ps.user
	if len(ps.regs) == 0 {
		delete(u.push, ps.key)
	}
	if d := u.device(resourceOf(ps.key)); d != nil {
		if d.detached && len(ps.regs) == 0 {
			// M10: the short timeout, counted from the detach.
			if e := d.inactiveSince.Add(m.cfg.ResumeTimeout); e.Before(d.expires) {
				m.hibernate(d, d.inactiveSince)
			}
		}
		m.reconcile(d) // an inactive device without push is live again
	}
}

// dropRegs removes every registration of a device (M8: clean logout,
// deleted account).
func (m *Machine) dropRegs(u *user, key string) {
	if ps := u.push[key]; ps != nil {
		for _, r := range slices.Clone(ps.regs) {
			m.removeReg(ps, r)
		}
	}
}

// cancelPush drops what was waiting to be published for the device: it is
// back (M5) or a new session of it started.
func (m *Machine) cancelPush(ps *pushState) {
	ps.pending = false
	for _, r := range ps.regs {
		r.retry, r.retryAt = nil, time.Time{}
	}
	ps.reset()
}

// --- triggers (M3) ---

// trigger counts stanzas queued for suspended d and publishes one
// notification if any is a message with a body or a subscription request
// and the last-active rule lets d be pushed (M6).
func (m *Machine) trigger(d *device, entries ...Entry) {
	ps := d.user.push[d.key]
	if ps == nil || len(ps.regs) == 0 {
		return
	}
	n := 0
	for _, en := range entries {
		if ps.count1(en.Stanza) {
			n++
		}
		ps.queued = max(ps.queued, en.Seq)
	}
	if n > 0 && m.pushable(d) {
		m.schedule(ps)
	}
}

// count1 adds st to the summary; false if it is not worth a notification.
func (ps *pushState) count1(st *stanza.Element) bool {
	switch st.Name.Local {
	case "presence":
		if st.Get("type") != "subscribe" {
			return false
		}
		ps.subs++
		ps.typ = "subscribe"
		return true
	case "message":
	default:
		return false
	}
	if fw := st.Child(stanza.NSCarbons, "received"); fw != nil {
		// A copy of a message another device got: still unread here.
		if inner := fw.Child(stanza.NSForward, "forwarded"); inner != nil {
			if msg := inner.Child(stanza.NSClient, "message"); msg != nil {
				st = msg
			}
		}
	} else if st.Child(stanza.NSCarbons, "sent") != nil {
		return false // the user's own message
	}
	typ := st.Get("type")
	switch typ {
	case "", "normal", "chat":
		typ = "chat"
	case "groupchat":
		if st.Child(stanza.NSClient, "subject") != nil {
			return false
		}
	default:
		return false
	}
	body := st.ChildText(stanza.NSClient, "body")
	if body == "" {
		return false
	}
	ps.count++
	ps.typ, ps.body = typ, body
	if from, err := jid.Parse(st.Get("from")); err == nil {
		ps.sender = from.Bare().String()
		ps.nick = ""
		if typ == "groupchat" {
			ps.nick = from.Resourcepart()
		}
	}
	return true
}

// schedule publishes now if the device's coalescing window is over, or
// once it is.
func (m *Machine) schedule(ps *pushState) {
	if !m.now.Before(ps.windowEnd) {
		m.publish(ps)
		return
	}
	if !ps.pending {
		ps.pending = true
		m.arm(timer{at: ps.windowEnd, ps: ps})
	}
}

// triggerOffline pushes the registrations of devices that are gone (a
// message was stored offline for the user, M10/M8).
func (m *Machine) triggerOffline(u *user, st *stanza.Element) {
	if len(u.push) == 0 {
		return
	}
	for _, k := range slices.Sorted(maps.Keys(u.push)) {
		ps := u.push[k]
		if u.device(resourceOf(k)) != nil || len(ps.regs) == 0 || !ps.count1(st) {
			continue
		}
		m.schedule(ps)
	}
}

// publish sends the device's notification to each of its registrations.
func (m *Machine) publish(ps *pushState) {
	ps.pending = false
	ps.windowEnd = m.now.Add(m.cfg.PushCoalesce)
	for _, r := range ps.regs {
		sum := Summary{Count: ps.count, PendingSubscriptions: ps.subs, Type: ps.typ}
		trusted := r.Encrypt != nil || slices.Contains(m.cfg.TrustedAppServers, r.AppServer.Domainpart())
		if trusted || m.cfg.IncludeSender {
			sum.Sender, sum.Nick = ps.sender, ps.nick
		}
		if trusted || m.cfg.IncludeBody {
			sum.Body = ps.body
		}
		act := Publish{Device: ps.key, Domain: r.AppServer.Domainpart(), Encrypt: r.Encrypt, Summary: sum, Through: ps.queued}
		act.Stanza = m.publishStanza(ps.user, r, sum)
		m.send1(&publication{ps: ps, reg: r, act: act, tries: 1})
	}
}

// send1 emits one publish with a fresh id and waits for its answer.
func (m *Machine) send1(p *publication) {
	p.id = m.nextID("push-")
	p.act.Stanza = withAttrs(p.act.Stanza, "id", p.id)
	p.deadline = m.now.Add(pushTimeout)
	p.reg.latest = p.id
	p.reg.retry, p.reg.retryAt = nil, time.Time{}
	m.pubs[p.id] = p
	m.arm(timer{at: p.deadline, pub: p})
	m.emit(p.act)
}

// publishStanza builds the XEP-0357 §7 publish with Prosody's summary form.
func (m *Machine) publishStanza(u *user, r *reg, sum Summary) *stanza.Element {
	field := func(v, typ, val string) *stanza.Element {
		f := stanza.New(nsData, "field", "type", typ, "var", v)
		if val != "" {
			f.Add(stanza.New(nsData, "value").AddText(val))
		}
		return f
	}
	sender := sum.Sender
	if sum.Nick != "" {
		sender += "/" + sum.Nick
	}
	// type='form', field types and order as Prosody's mod_cloud_notify
	// sends them, so that an app server written against Prosody reads ours.
	form := stanza.New(nsData, "x", "type", "form").Add(
		field("FORM_TYPE", "hidden", pushSummary),
		field("message-count", "text-single", strconv.Itoa(sum.Count)),
		field("pending-subscription-count", "text-single", strconv.Itoa(sum.PendingSubscriptions)),
		field("last-message-sender", "jid-single", sender),
		field("last-message-body", "text-single", sum.Body),
	)
	publish := stanza.New(nsPubSub, "publish")
	if r.Node != "" {
		publish.Set("node", r.Node)
	}
	publish.Add(stanza.New(nsPubSub, "item").Add(stanza.New(stanza.NSPush, "notification").Add(form)))
	ps := stanza.New(nsPubSub, "pubsub").Add(publish)
	if r.Options != nil {
		ps.Add(stanza.New(nsPubSub, "publish-options").Add(r.Options))
	}
	// The id is set per send (send1).
	return stanza.New(stanza.NSClient, "iq", "type", "set", "from", u.bareStr, "to", r.AppServer.String()).Add(ps)
}

// --- answers ---

// pushAnswer handles the app server's answer to a publish; false if st is
// not one.
func (m *Machine) pushAnswer(st *stanza.Element, from jid.JID) bool {
	typ := st.Get("type")
	if st.Name.Local != "iq" || (typ != "result" && typ != "error") {
		return false
	}
	p := m.pubs[st.Get("id")]
	if p == nil || !(from.Equal(p.reg.AppServer) || from.Bare().Equal(p.reg.AppServer)) {
		return false
	}
	delete(m.pubs, p.id)
	if typ == "result" {
		if ps := p.ps; p.act.Through > ps.pushed {
			ps.pushed = p.act.Through
			if d := ps.user.device(resourceOf(ps.key)); d != nil && d.stream != 0 {
				m.emit(Pushed{Stream: d.stream, Device: ps.key, Through: ps.pushed})
			}
		}
		return true
	}
	etyp, cond := "cancel", "undefined-condition"
	if e := st.Child(stanza.NSClient, "error"); e != nil {
		etyp = e.Get("type")
		for _, c := range e.Elements() {
			if c.Name.Space == stanza.NSStanzaErr && c.Name.Local != "text" {
				cond = c.Name.Local
				break
			}
		}
	}
	if etyp == "wait" {
		m.pushWait(p)
		return true
	}
	// Anything else means the app server will not take this registration
	// (P1: unknown node, wrong secret): disable it, as XEP-0357 §8 says.
	if slices.Contains(p.ps.regs, p.reg) {
		m.removeReg(p.ps, p.reg)
		m.emit(PushDisabled{Device: p.ps.key, AppServer: p.reg.AppServer, Node: p.reg.Node, Reason: cond})
	}
	return true
}

// pushWait retries a publish the app server could not take now, with
// exponential backoff, unless a newer one was sent, the device is back,
// or it was tried pushTries times.
func (m *Machine) pushWait(p *publication) {
	r := p.reg
	if r.latest != p.id || p.tries >= pushTries || !slices.Contains(p.ps.regs, r) {
		return
	}
	if d := p.ps.user.device(resourceOf(p.ps.key)); d != nil && !d.susp {
		return
	}
	backoff := min(time.Second<<(p.tries-1), pushMaxBackoff)
	r.retry, r.retryAt = p, m.now.Add(backoff)
	m.arm(timer{at: r.retryAt, reg: r})
}

// --- timers ---

// timer is one deadline of the push machinery: a coalesced publish (ps),
// a retry (reg) or a publish's answer timeout (pub). Timers are never
// removed: a stale one finds its state changed and does nothing.
type timer struct {
	at  time.Time
	seq uint64 // ties broken by arming order: deterministic
	ps  *pushState
	reg *reg
	pub *publication
}

type timerHeap []timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if c := h[i].at.Compare(h[j].at); c != 0 {
		return c < 0
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

func (m *Machine) arm(t timer) {
	m.timerSeq++
	t.seq = m.timerSeq
	heap.Push(&m.timers, t)
}

// runTimers fires every push deadline that has passed.
func (m *Machine) runTimers() {
	for len(m.timers) > 0 && !m.now.Before(m.timers[0].at) {
		t := heap.Pop(&m.timers).(timer)
		switch {
		case t.pub != nil:
			if m.pubs[t.pub.id] == t.pub && t.at.Equal(t.pub.deadline) {
				delete(m.pubs, t.pub.id)
				m.pushWait(t.pub) // no answer: as if the app server said wait
			}
		case t.reg != nil:
			r := t.reg
			if r.retry == nil || !r.retryAt.Equal(t.at) {
				continue
			}
			p := r.retry
			r.retry, r.retryAt = nil, time.Time{}
			if !slices.Contains(p.ps.regs, r) {
				continue
			}
			m.send1(&publication{ps: p.ps, reg: r, act: p.act, tries: p.tries + 1})
		case t.ps != nil:
			ps := t.ps
			if !ps.pending || !t.at.Equal(ps.windowEnd) || ps.user.push[ps.key] != ps {
				continue
			}
			if d := ps.user.device(resourceOf(ps.key)); d != nil && !d.susp {
				ps.pending = false
				continue
			}
			m.publish(ps)
		}
	}
}

// --- M7 ---

func (m *Machine) stepInCall(e InCall) {
	u := m.user(e.User)
	if u == nil {
		return
	}
	if e.Active {
		if u.inCall == nil {
			u.inCall = make(map[string]bool)
		}
		u.inCall[e.Device] = true
	} else {
		delete(u.inCall, e.Device)
	}
}

// --- restart ---

// restore creates the devices the stores know of at start (a queue, a
// registration): hibernating without a stream, so that stanzas for them
// queue and push until a Bound of the resource takes them over. Their
// hibernation is counted from the first Step.
func (m *Machine) restore(st State) {
	keys := map[string]bool{}
	for k := range st.Queues {
		keys[k] = true
	}
	for k := range st.Registrations {
		keys[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		j, err := jid.Parse(k)
		if err != nil || j.Resourcepart() == "" {
			continue
		}
		u := m.user(j)
		if u == nil || u.device(j.Resourcepart()) != nil {
			continue
		}
		for _, r := range st.Registrations[k] {
			ps := m.pushStateOf(u, k)
			rr := r
			ps.regs = append(ps.regs, &reg{Registration: rr})
		}
		d := &device{user: u, jid: j, key: k, detached: true, active: true, susp: true, kind: m.kindOf(j.Resourcepart(), "")}
		if qi, ok := st.Queues[k]; ok && qi.Count > 0 {
			low := qi.First - 1
			if qi.First == 0 {
				low = 0
			}
			d.seq, d.qHigh, d.qLow, d.acked = qi.Last, qi.Last, low, low
			d.restoredCount, d.restoredBytes, d.restoredLast = qi.Count, qi.Bytes, qi.Last
		}
		// Presence is not stored: the device is taken as available with
		// empty presence, so that messages to the bare JID reach its queue,
		// and contacts see it away (M4) until it returns.
		d.available = true
		d.lastPresence = stanza.New(stanza.NSClient, "presence", "from", k)
		u.addDevice(d)
		u.away = true
		m.restoring = append(m.restoring, d)
	}
}

// stepAdopt restores the devices a failed primary held, as restart
// recovery does, and ties those with a replicated XEP-0198 session to
// their stream so the client can resume here.
func (m *Machine) stepAdopt(e Adopt) {
	queues := maps.Clone(e.Queues)
	if queues == nil {
		queues = map[string]QueueInfo{}
	}
	for k := range e.Streams {
		if _, ok := queues[k]; !ok {
			// A resumable session with nothing queued still comes back.
			queues[k] = QueueInfo{}
		}
	}
	m.restore(State{Queues: queues, Registrations: e.Registrations})
	restored := m.restoring
	for _, d := range restored {
		if id := e.Streams[d.key]; id != 0 && m.streams[id] == nil {
			// The adopted stream manages acknowledgements: once resumed
			// it is kept like the one it replaces.
			d.stream, d.kept = id, true
			m.streams[id] = d
		}
	}
	m.startRestored()
	for bare, n := range e.Offline {
		if j, err := jid.Parse(bare); err == nil {
			if u := m.user(j); u != nil {
				u.offline, u.offlineUnknown = max(n, 0), n < 0
			}
		}
	}
	// What the failed primary queued but never had pushed (it died in
	// the coalescing window, or before the app server answered) is
	// pushed from here, as if it had just been queued (M3), after a
	// moment: the stanzas that were on their way to the dead node arrive
	// right after a takeover, and one notification covers them too.
	for _, d := range restored {
		en := e.Unpushed[d.key]
		ps := d.user.push[d.key]
		if len(en) == 0 || ps == nil || d.user.device(d.jid.Resourcepart()) != d {
			continue
		}
		ps.windowEnd = maxTime(ps.windowEnd, m.now.Add(adoptPushDelay))
		m.trigger(d, en...)
	}
}

// stepRelease forgets devices another node now serves.
func (m *Machine) stepRelease(e Release) {
	keys := e.Devices
	if e.Match != nil {
		for _, u := range m.users {
			for _, d := range u.devices {
				if e.Match(d.key) {
					keys = append(keys, d.key)
				}
			}
		}
	}
	for _, key := range keys {
		j, err := jid.Parse(key)
		if err != nil {
			continue
		}
		u := m.user(j)
		if u == nil {
			continue
		}
		d := u.device(j.Resourcepart())
		if d == nil {
			continue
		}
		if d.stream != 0 {
			delete(m.streams, d.stream)
		}
		delete(m.hib, d.key)
		u.removeDevice(d)
		if ps := u.push[key]; ps != nil {
			ps.pending, ps.regs = false, nil
			delete(u.push, key)
		}
		for id, p := range m.pubs {
			if p.ps != nil && p.ps.key == key {
				delete(m.pubs, id)
			}
		}
	}
}

// startRestored starts the hibernation of restored devices at the first
// Step's time.
func (m *Machine) startRestored() {
	for _, d := range m.restoring {
		if d.detached && (d.stream == 0 || m.streams[d.stream] == d) && d.user.device(d.jid.Resourcepart()) == d {
			m.hibernate(d, m.now)
		}
	}
	m.restoring = nil
}

func resourceOf(key string) string {
	if i := strings.IndexByte(key, '/'); i >= 0 {
		return key[i+1:]
	}
	return ""
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
