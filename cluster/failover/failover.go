// Package failover is a cluster node's failover protocol as a
// deterministic state machine (BEHAVIOUR H2–H4, H6): which users this node
// serves, when it takes over those of a lost member, when it hands users
// to a member that joined, when it waits for the others' handovers
// (syncing), and when the backups of its users get a full copy.
//
// Like jsm, and like etcd's raft, it does no I/O and starts no goroutine:
// the caller feeds it events (membership, handovers, finished jobs, the
// clock) through Step and carries out the actions it returns: adopting
// devices, handing them over, resynchronising backups, sweeping stale
// copies. What other goroutines may read, the View, is taken after the
// actions of a step were carried out, so that nobody routes by a view
// whose takeover has not happened yet.
package failover

import (
	"slices"
	"strings"
	"time"

	"pushd/cluster"
)

// Config configures a Machine. DefaultConfig documents the defaults.
type Config struct {
	// Self is this node's member name (required).
	Self string
	// SyncWait bounds how long a node that starts or comes back waits for
	// every live member's handover before it serves what it has (5 s).
	SyncWait time.Duration
	// ResyncDelay is how long after a takeover, or a member's joining, the
	// new backups get their copies (1 s): the takeover's first pushes (H3)
	// go first, and a second second of membership changes is coalesced.
	ResyncDelay time.Duration
	// SweepDelay is how long membership must stay unchanged before the
	// node drops its copies of users it neither serves nor backs up (10 s).
	SweepDelay time.Duration
}

// DefaultConfig returns the defaults, for Self.
func DefaultConfig(self string) Config {
	return Config{Self: self, SyncWait: 5 * time.Second, ResyncDelay: time.Second, SweepDelay: 10 * time.Second}
}

// Event is an input of Step.
type Event interface{ event() }

// Started: the node is a member (or alone); Joining when it was told
// members to join, which it waits a moment to learn.
type Started struct {
	Members []string
	Joining bool
}

// MemberJoined and MemberLost carry the live members after the change.
type MemberJoined struct {
	Name    string
	Members []string
}

// MemberLost: Name failed or left.
type MemberLost struct {
	Name    string
	Members []string
}

// DeclaredDead: the others declared this node dead (it was paused or cut
// off) and took its users over: a member's handover opened with
// KindTakenOver.
type DeclaredDead struct{}

// HandoverEnded: From sent every device of the users this node serves,
// and names the users it served meanwhile (their copies here are stale).
type HandoverEnded struct {
	From   string
	Served []string
}

// Dropped: replication dropped records for Peer (backpressure); the users
// it backs up need a full copy.
type Dropped struct{ Peer string }

// JobDone: the job of the last StartResync or StartSweep finished.
type JobDone struct{}

// Tick: time passed (Step takes the clock; Tick carries nothing else).
type Tick struct{}

func (Started) event()       {}
func (MemberJoined) event()  {}
func (MemberLost) event()    {}
func (DeclaredDead) event()  {}
func (HandoverEnded) event() {}
func (Dropped) event()       {}
func (JobDone) event()       {}
func (Tick) event()          {}

// Action is an output of Step, for the caller to carry out in order.
type Action interface{ action() }

// Adopt: serve every device whose user's primary is Placement's and this
// node's: the replicated sessions held here and, with FromDisk, the own
// store's devices nobody handed over, except those of Stale users (served
// elsewhere meanwhile: drop them). Before is the placement under which the
// node held its users until now (nil: none); users it newly serves are
// those it was not primary of under Before. The caller carries it out
// before it publishes the View that follows.
type Adopt struct {
	Placement, Before *cluster.Placement
	FromDisk          bool
	Stale             []string
}

// Forget: drop every device of the users Placement makes this node's
// primary of (the others took them over while it was away); their live
// clients reconnect and resume on what the handovers bring.
type Forget struct{ Placement *cluster.Placement }

// Welcome: send Member the accounts and push registrations, then hand it
// the devices of the users it now serves; Before as in Adopt names those
// this node served while Member was away. TakenOver: this node took Member
// for dead since it last saw it join (the handover opens with
// KindTakenOver). It may run in the background.
type Welcome struct {
	Member    string
	Before    *cluster.Placement
	TakenOver bool
}

// StartResync: give the backups of the users Pick selects a full copy, in
// the background; step JobDone when it is done.
type StartResync struct {
	Why  string
	Pick Pick
}

// StartSweep: drop the copies of users this node neither serves nor backs
// up, in the background; step JobDone when it is done.
type StartSweep struct{}

func (Adopt) action()       {}
func (Forget) action()      {}
func (Welcome) action()     {}
func (StartResync) action() {}
func (StartSweep) action()  {}

// Pick selects the users a resync covers, by their backup.
type Pick struct {
	All bool
	// BackupIs: users whose backup is one of these.
	BackupIs []string
	// Lost: users whose primary or backup was one of these members under
	// the placement before it was lost.
	Lost []Loss
}

// Loss is a member lost and the placement it was part of.
type Loss struct {
	Node string
	Was  *cluster.Placement
}

// Has reports whether user, whose backup is now backup, is picked.
func (p Pick) Has(user, backup string) bool {
	if p.All || slices.Contains(p.BackupIs, backup) {
		return true
	}
	for _, l := range p.Lost {
		if pr, b := l.Was.PrimaryBackup(user); pr == l.Node || b == l.Node {
			return true
		}
	}
	return false
}

func (p Pick) merge(q Pick) Pick {
	if p.All || q.All {
		return Pick{All: true}
	}
	for _, b := range q.BackupIs {
		if !slices.Contains(p.BackupIs, b) {
			p.BackupIs = append(p.BackupIs, b)
		}
	}
	p.Lost = append(p.Lost, q.Lost...)
	return p
}

// View is what routing needs: the live placement, the placement under
// which this node holds its users' devices, and whether it is syncing.
type View struct {
	Self      string
	Placement *cluster.Placement
	Settled   *cluster.Placement
	Syncing   bool
}

// Serving names the node whose session manager holds user's devices: the
// placement's primary, or "" while that is this node and it does not hold
// them yet (it syncs, or a takeover has not been carried out).
func (v View) Serving(user string) string {
	p := v.Placement.Primary(user)
	if p != v.Self {
		return p
	}
	if v.Syncing {
		return ""
	}
	if v.Settled != nil {
		if was := v.Settled.Primary(user); was != "" && was != p {
			return ""
		}
	}
	return p
}

// Machine is the failover protocol of one node. It is not safe for
// concurrent use: one goroutine steps it.
type Machine struct {
	cfg     Config
	now     time.Time
	started bool
	place   *cluster.Placement
	settled *cluster.Placement
	sync    *syncRound // nil: not syncing

	lost     map[string]bool // members lost since they last joined
	job      bool            // a StartResync or StartSweep runs
	resync   *StartResync    // due at resyncAt, coalesced
	resyncAt time.Time
	sweepAt  time.Time // zero: none due
	out      []Action
}

// syncRound is one wait for the others' handovers: at start, and again
// after the others declared this node dead.
type syncRound struct {
	deadline time.Time
	joining  bool // wait until membership knows another member
	fromDisk bool // serve the own store's devices nobody handed over
	ended    map[string]bool
	stale    map[string]bool
}

// New returns a machine that has not started: it syncs once Started.
func New(cfg Config) *Machine {
	def := DefaultConfig(cfg.Self)
	if cfg.SyncWait <= 0 {
		cfg.SyncWait = def.SyncWait
	}
	if cfg.ResyncDelay <= 0 {
		cfg.ResyncDelay = def.ResyncDelay
	}
	if cfg.SweepDelay <= 0 {
		cfg.SweepDelay = def.SweepDelay
	}
	return &Machine{cfg: cfg, place: cluster.NewPlacement(nil), sync: &syncRound{}, lost: map[string]bool{}}
}

// View returns the routing view. Take it after the actions of the last
// Step were carried out.
func (m *Machine) View() View {
	return View{Self: m.cfg.Self, Placement: m.place, Settled: m.settled, Syncing: m.sync != nil}
}

// Next returns when the machine next wants a Tick (zero: no timer).
func (m *Machine) Next() time.Time {
	var next time.Time
	earlier := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if m.started && m.sync != nil {
		earlier(m.sync.deadline)
	}
	if m.resync != nil {
		earlier(m.resyncAt)
	}
	earlier(m.sweepAt)
	return next
}

// Step feeds one event at now and returns the actions to carry out.
func (m *Machine) Step(now time.Time, ev Event) []Action {
	m.now = now
	m.out = nil
	switch e := ev.(type) {
	case Started:
		if m.started {
			break
		}
		m.started = true
		m.place = cluster.NewPlacement(e.Members)
		m.sync = &syncRound{deadline: now.Add(m.cfg.SyncWait), joining: e.Joining, fromDisk: true,
			ended: map[string]bool{}, stale: map[string]bool{}}
	case MemberJoined:
		m.memberJoined(e)
	case MemberLost:
		m.memberLost(e)
	case DeclaredDead:
		if !m.started || m.sync != nil {
			break // already waiting for handovers: they cover this
		}
		m.sync = &syncRound{deadline: now.Add(m.cfg.SyncWait), ended: map[string]bool{}, stale: map[string]bool{}}
		m.settled = nil
		m.emit(Forget{Placement: m.place})
	case HandoverEnded:
		m.handoverEnded(e)
	case Dropped:
		m.scheduleResync("records dropped", Pick{BackupIs: []string{e.Peer}}, now)
	case JobDone:
		m.job = false
	case Tick:
	}
	m.advance()
	return m.out
}

func (m *Machine) emit(a Action) { m.out = append(m.out, a) }

func (m *Machine) memberJoined(e MemberJoined) {
	m.place = cluster.NewPlacement(e.Members)
	m.sweepAt = m.now.Add(m.cfg.SweepDelay)
	if e.Name == m.cfg.Self || !m.started {
		return
	}
	before := m.settled
	// A member that joins only takes users away (rendezvous hashing):
	// what this node holds covers the settled placement plus it, and
	// should it fail again its users wait here for their takeover.
	if m.settled != nil && !m.settled.Has(e.Name) {
		m.settled = cluster.NewPlacement(append(m.settled.Nodes(), e.Name))
	}
	m.emit(Welcome{Member: e.Name, Before: before, TakenOver: m.lost[e.Name]})
	delete(m.lost, e.Name)
	// e.Name holds nothing of the users it now backs up, or what it held
	// before it left. (After a partition both sides see the other join;
	// the side declared dead learns it a moment later and resyncs all.)
	m.scheduleResync("member joined", Pick{BackupIs: []string{e.Name}}, m.now.Add(m.cfg.ResyncDelay))
}

func (m *Machine) memberLost(e MemberLost) {
	was := m.place
	m.place = cluster.NewPlacement(e.Members)
	m.sweepAt = m.now.Add(m.cfg.SweepDelay)
	if e.Name != m.cfg.Self {
		m.lost[e.Name] = true
	}
	if !m.started || m.sync != nil {
		return // the sync's end adopts whatever is this node's then
	}
	m.emit(Adopt{Placement: m.place, Before: m.settled})
	m.settled = m.place
	// The users e.Name was primary or backup of have a new backup holding
	// nothing of them yet. The copy waits for the takeover's first pushes
	// (H3); a primary that fails in that second leaves its users' new
	// backup with only what it received since the first failure.
	m.scheduleResync("member lost", Pick{Lost: []Loss{{Node: e.Name, Was: was}}}, m.now.Add(m.cfg.ResyncDelay))
}

func (m *Machine) handoverEnded(e HandoverEnded) {
	if s := m.sync; s != nil && m.started {
		s.ended[e.From] = true
		for _, u := range e.Served {
			s.stale[u] = true
		}
		return
	}
	if !m.started {
		return
	}
	// After the sync window: the sessions it carried are replicas here
	// now, and this node serves their users: adopt them (the devices it
	// serves already are left as they are).
	m.emit(Adopt{Placement: m.place, Before: m.settled})
	m.settled = m.place
}

func (m *Machine) scheduleResync(why string, p Pick, at time.Time) {
	if m.resync == nil {
		m.resync, m.resyncAt = &StartResync{Why: why, Pick: p}, at
		return
	}
	if !strings.Contains(m.resync.Why, why) {
		m.resync.Why += ", " + why
	}
	m.resync.Pick = m.resync.Pick.merge(p)
	if at.Before(m.resyncAt) {
		m.resyncAt = at
	}
}

// advance ends a sync that may end and starts a job that is due.
func (m *Machine) advance() {
	if s := m.sync; s != nil && m.started && m.syncDone(s) {
		m.emit(Adopt{Placement: m.place, Before: m.settled, FromDisk: s.fromDisk, Stale: sortedKeys(s.stale)})
		m.settled = m.place
		m.sync = nil
		// The backups of this node's users may hold nothing of them, or
		// what they held before it left: every one gets a full copy, which
		// covers any resync scheduled meanwhile.
		m.resync = nil
		m.scheduleResync("synced", Pick{All: true}, m.now)
	}
	if m.sync != nil {
		if !m.sweepAt.IsZero() && !m.now.Before(m.sweepAt) {
			m.sweepAt = time.Time{} // what this node holds is not settled: nothing to judge stale by
		}
		return
	}
	if m.job {
		return
	}
	switch {
	case m.resync != nil && !m.now.Before(m.resyncAt):
		m.emit(*m.resync)
		m.resync, m.job = nil, true
	case !m.sweepAt.IsZero() && !m.now.Before(m.sweepAt):
		m.emit(StartSweep{})
		m.sweepAt, m.job = time.Time{}, true
	}
}

func (m *Machine) syncDone(s *syncRound) bool {
	if !m.now.Before(s.deadline) {
		return true
	}
	others := 0
	for _, n := range m.place.Nodes() {
		if n == m.cfg.Self {
			continue
		}
		others++
		if !s.ended[n] {
			return false
		}
	}
	// A joining node first waits to learn another member (bounded by the
	// deadline): alone, it would serve its stale copy at once.
	return others > 0 || !s.joining
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
