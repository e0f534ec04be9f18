package jsm

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
)

// Machine is the session manager's whole state. It is not safe for
// concurrent use: the router calls Step under one mutex.
type Machine struct {
	cfg    Config
	domain string

	users      map[string]*user     // by localpart: every user is local
	streams    map[StreamID]*device // every bound stream, live or detached
	components map[string]bool      // connected component domains

	// draining holds the devices that are gone for good while their queue
	// is read back (LoadQueue → QueueLoaded) to move messages offline.
	draining map[string]drain

	// nextExpiry is the earliest hibernation deadline, or zero. It may be
	// stale-early (a resumed device's deadline is not removed): a scan that
	// finds nothing due just recomputes it, so each Step costs O(1) until
	// a deadline really passes.
	nextExpiry time.Time

	// hib holds the hibernating devices (detached, or restored without a
	// stream) by key: the ones expire looks at.
	hib map[string]*device
	// restoring are the devices restored by New, whose hibernation starts
	// at the first Step.
	restoring []*device

	// Push (push.go): publishes waiting for an answer by id, and the heap
	// of push deadlines.
	pubs     map[string]*publication
	timers   timerHeap
	timerSeq uint64

	// The stanza of the current StanzaIn or ComponentIn and its size as
	// received (M9), and the last stanza refused for a full queue (one
	// error per stanza).
	inStanza *stanza.Element
	inSize   int
	refused  *stanza.Element

	ids uint64    // numbers the ids of stanzas jsm makes (roster pushes)
	now time.Time // the time passed to the current Step
	out []Action  // what the current Step returns
	buf []*device // scratch for recipient lists, reused across Steps
}

// drain remembers what is needed to move a gone device's queue offline.
type drain struct {
	user    *user
	acked   uint64 // entries up to here reached the client: not stored again
	lastSeq uint64 // a device re-bound meanwhile continues from here
}

// New returns a Machine serving cfg.Domain with the accounts and rosters of
// st. Zero fields of cfg take DefaultConfig's values.
func New(cfg Config, st State) *Machine {
	def := DefaultConfig()
	if cfg.Domain == "" {
		cfg.Domain = def.Domain
	}
	if cfg.ResumeTimeout <= 0 {
		cfg.ResumeTimeout = def.ResumeTimeout
	}
	if cfg.MaxOffline <= 0 {
		cfg.MaxOffline = def.MaxOffline
	}
	if cfg.PushResumeTimeout <= 0 {
		cfg.PushResumeTimeout = def.PushResumeTimeout
	}
	if cfg.PushCoalesce <= 0 {
		cfg.PushCoalesce = def.PushCoalesce
	}
	if cfg.DesktopIdle <= 0 {
		cfg.DesktopIdle = def.DesktopIdle
	}
	if cfg.MaxQueueEntries <= 0 {
		cfg.MaxQueueEntries = def.MaxQueueEntries
	}
	if cfg.MaxQueueBytes <= 0 {
		cfg.MaxQueueBytes = def.MaxQueueBytes
	}
	domain := cfg.Domain
	if d, err := jid.Parse(domain); err == nil {
		domain = d.Domainpart()
	}
	m := &Machine{
		cfg:        cfg,
		domain:     domain,
		users:      make(map[string]*user),
		streams:    make(map[StreamID]*device),
		components: make(map[string]bool),
		draining:   make(map[string]drain),
		hib:        make(map[string]*device),
		pubs:       make(map[string]*publication),
	}
	for _, u := range st.Users {
		nu := m.addUser(u)
		if nu == nil {
			continue
		}
		n, ok := st.Offline[nu.bare.String()]
		nu.offline, nu.offlineUnknown = n, !ok
	}
	for bare, items := range st.Rosters {
		j, err := jid.Parse(bare)
		if err != nil {
			continue
		}
		u := m.user(j)
		if u == nil {
			continue
		}
		for _, it := range items {
			it.JID = it.JID.Bare()
			u.setItem(it)
		}
	}
	m.restore(st)
	return m
}

// Step feeds one event to the machine at time now and returns the actions
// the caller must carry out, in order. The returned slice and the stanzas
// in it belong to the caller; stanzas may be shared between actions, so
// they must be treated as read-only.
func (m *Machine) Step(now time.Time, ev Event) []Action {
	m.now = now
	m.out = nil
	m.refused = nil
	if m.restoring != nil {
		m.startRestored()
	}
	// Deadlines first: a stream whose hibernation ended before this event
	// can no longer be resumed by it.
	m.expire()
	m.runTimers()
	switch e := ev.(type) {
	case Adopt:
		m.stepAdopt(e)
	case Forwarded:
		m.inStanza, m.inSize = e.Stanza, e.Size
		m.stepForwarded(e)
	case Release:
		m.stepRelease(e)
	case Bound:
		m.stepBound(e)
	case StanzaIn:
		m.inStanza, m.inSize = e.Stanza, e.Size
		m.stepStanzaIn(e)
	case ComponentIn:
		m.inStanza, m.inSize = e.Stanza, e.Size
		m.stepComponentIn(e)
	case ComponentUp:
		m.components[e.Domain] = true
	case ComponentDown:
		delete(m.components, e.Domain)
	case Managed:
		if d := m.streams[e.Stream]; d != nil {
			d.kept = true
		}
	case Acked:
		m.stepAcked(e)
	case Detached:
		m.stepDetached(e)
	case Resumed:
		m.stepResumed(e)
	case Closed:
		m.stepClosed(e)
	case ClientState:
		m.stepClientState(e)
	case InCall:
		m.stepInCall(e)
	case OfflineLoaded:
		m.stepOfflineLoaded(e)
	case QueueLoaded:
		m.stepQueueLoaded(e)
	case Tick:
		// expire already ran.
	case UserAdded:
		m.addUser(e.User)
	case UserDeleted:
		m.stepUserDeleted(e)
	}
	out := m.out
	m.out, m.inStanza, m.refused = nil, nil, nil
	return out
}

// NextDeadline (added) reports when the machine next needs a Tick, so the
// router can arm one timer instead of ticking blindly.
// It may be early (a deadline that no longer matters): a Tick then does
// nothing. Devices restored by New get theirs at the first Step.
func (m *Machine) NextDeadline() (time.Time, bool) {
	t := m.nextExpiry
	if len(m.timers) > 0 && (t.IsZero() || m.timers[0].at.Before(t)) {
		t = m.timers[0].at
	}
	return t, !t.IsZero()
}

// DeviceInfo (added) is a read-only view of one device for tests and the
// admin API.
type DeviceInfo struct {
	JID       jid.JID
	Stream    StreamID
	Kind      Kind
	Available bool // sent available presence (a detached device stays so)
	Detached  bool // XEP-0198 hibernation
	Active    bool // XEP-0352 state, true unless the client said <inactive/>
	Carbons   bool
	Priority  int
	Show      string
	Status    string
	Seq       uint64 // last outbound Seq assigned
	Acked     uint64 // highest Seq the client acknowledged
	Queued    bool   // the device's queue holds entries
	// Added with the suspended state (M2, M9).
	Suspended     bool           // stanzas are queued, not written
	QueuedCount   int            // entries queued and not yet acked
	QueuedBytes   int64          // their size
	Registrations []Registration // XEP-0357 registrations of the device
}

// Devices (added) lists the user's devices, ordered by resource.
func (m *Machine) Devices(user jid.JID) []DeviceInfo {
	u := m.user(user)
	if u == nil {
		return nil
	}
	out := make([]DeviceInfo, 0, len(u.devices))
	for _, d := range u.devices {
		out = append(out, DeviceInfo{
			JID: d.jid, Stream: d.stream, Kind: d.kind,
			Available: d.available, Detached: d.detached, Active: d.active,
			Carbons: d.carbons, Priority: d.priority, Show: d.show, Status: d.status,
			Seq: d.seq, Acked: d.acked, Queued: d.queued(),
			Suspended: d.susp, QueuedCount: d.qCount + d.restoredCount, QueuedBytes: d.qBytes + d.restoredBytes,
			Registrations: m.Registrations(d.key),
		})
	}
	return out
}

// Registrations (added) returns the push registrations of a device (full
// JID string), present or gone.
func (m *Machine) Registrations(device string) []Registration {
	j, err := jid.Parse(device)
	if err != nil {
		return nil
	}
	u := m.user(j)
	if u == nil || u.push[device] == nil {
		return nil
	}
	var out []Registration
	for _, r := range u.push[device].regs {
		out = append(out, r.Registration)
	}
	return out
}

// Roster (added) returns a copy of the user's roster, ordered by contact.
func (m *Machine) Roster(user jid.JID) []RosterItem {
	u := m.user(user)
	if u == nil {
		return nil
	}
	out := make([]RosterItem, 0, len(u.order))
	for _, k := range u.order {
		it := *u.roster[k]
		it.Groups = slices.Clone(it.Groups)
		out = append(out, it)
	}
	return out
}

func (m *Machine) emit(a Action) { m.out = append(m.out, a) }

// nextID numbers stanzas jsm originates; deterministic so that replays and
// the backup node produce the same ids.
func (m *Machine) nextID(prefix string) string {
	m.ids++
	return prefix + strconv.FormatUint(m.ids, 10)
}

// user returns the local account of j, or nil.
func (m *Machine) user(j jid.JID) *user {
	if j.Domainpart() != m.domain || j.Localpart() == "" {
		return nil
	}
	return m.users[j.Localpart()]
}

func (m *Machine) addUser(j jid.JID) *user {
	if j.Localpart() == "" || j.Domainpart() != m.domain {
		return nil
	}
	if u := m.users[j.Localpart()]; u != nil {
		return u
	}
	u := &user{bare: j.Bare(), roster: make(map[string]*RosterItem)}
	u.bareStr = u.bare.String()
	m.users[j.Localpart()] = u
	return u
}

// stepUserDeleted ends the account: its devices are closed, and local
// contacts see the subscriptions cancelled as if the user removed each
// roster item (as Prosody's mod_roster does on user deletion).
func (m *Machine) stepUserDeleted(e UserDeleted) {
	u := m.user(e.User)
	if u == nil {
		return
	}
	for len(u.devices) > 0 {
		d := u.devices[0]
		if d.stream != 0 {
			m.emit(CloseStream{Stream: d.stream, Condition: "not-authorized"})
		}
		m.gone(d, nil)
	}
	for _, k := range slices.Sorted(maps.Keys(u.push)) {
		m.dropRegs(u, k)
	}
	for _, k := range slices.Clone(u.order) {
		m.removeItem(u, u.roster[k])
	}
	delete(m.users, u.bare.Localpart())
}

// isComponent reports whether domain is served by a connected component
// (XEP-0114: a component owns exactly its domain; subdomains are not its).
func (m *Machine) isComponent(domain string) bool {
	return m.components[domain]
}

func hasPrefixAny(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if p != "" && strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// stamp is the XEP-0082 form of t used in delay elements.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// withAttrs returns a shallow copy of st with attributes replaced by
// pairs; children are shared, which is safe because stanzas in actions are
// read-only.
func withAttrs(st *stanza.Element, pairs ...string) *stanza.Element {
	c := &stanza.Element{Name: st.Name, Children: st.Children}
	c.Attr = slices.Clone(st.Attr)
	for i := 0; i+1 < len(pairs); i += 2 {
		c.Set(pairs[i], pairs[i+1])
	}
	return c
}
