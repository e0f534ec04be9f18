package main

import (
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/cluster"
	"pushd/cluster/failover"
	"pushd/internal/stanza"
)

// The failover protocol's runner: membership events, handovers and
// finished jobs go into an inbox; one goroutine steps the failover.Machine
// with them and the clock, carries out its actions, and only then
// publishes the machine's View, by which Home, Serving and the session
// manager's Remote route. Nothing else decides when a takeover happens.

// inbox is an unbounded queue of events: its writers (membership
// callbacks, the replicator under the router's lock) must never block.
type inbox struct {
	mu     sync.Mutex
	events []inboxEvent
	signal chan struct{}
}

// inboxEvent is an event, and a channel closed once its step's actions
// were carried out (nil: nobody waits).
type inboxEvent struct {
	ev   failover.Event
	done chan struct{}
}

func (b *inbox) put(ev failover.Event) { b.send(inboxEvent{ev: ev}) }

// putWait puts ev and returns a channel closed once it was stepped.
func (b *inbox) putWait(ev failover.Event) <-chan struct{} {
	done := make(chan struct{})
	b.send(inboxEvent{ev: ev, done: done})
	return done
}

func (b *inbox) send(e inboxEvent) {
	b.mu.Lock()
	b.events = append(b.events, e)
	b.mu.Unlock()
	select {
	case b.signal <- struct{}{}:
	default:
	}
}

func (b *inbox) take() []inboxEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	evs := b.events
	b.events = nil
	return evs
}

// viewState is the published View and a channel closed when it is
// replaced.
type viewState struct {
	view    failover.View
	changed chan struct{}
}

func (cn *clusterNode) currentView() (failover.View, <-chan struct{}) {
	v := cn.view.Load()
	return v.view, v.changed
}

func (cn *clusterNode) publish(v failover.View) {
	if v.Syncing {
		cn.syncingGauge.Set(1)
	} else {
		cn.syncingGauge.Set(0)
	}
	old := cn.view.Swap(&viewState{view: v, changed: make(chan struct{})})
	if old != nil {
		close(old.changed)
	}
}

// syncingNow reports whether the node waits for the others' handovers.
func (cn *clusterNode) syncingNow() bool {
	v, _ := cn.currentView()
	return v.Syncing
}

// sync starts the failover protocol: the node waits for every live
// member's handover (or the sync window), then takes over its users.
func (cn *clusterNode) sync(joining bool) {
	cn.spawn(func() { cn.run(joining) })
}

func (cn *clusterNode) run(joining bool) {
	cn.step(failover.Started{Members: cn.c.Placement().Nodes(), Joining: joining})
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Stop()
		if next := cn.fo.Next(); !next.IsZero() {
			timer.Reset(time.Until(next))
		}
		select {
		case <-cn.inbox.signal:
			for _, e := range cn.inbox.take() {
				cn.step(e.ev)
				if e.done != nil {
					close(e.done)
				}
			}
		case <-timer.C:
			cn.step(failover.Tick{})
		case <-cn.quit:
			return
		}
	}
}

func (cn *clusterNode) step(ev failover.Event) {
	for _, a := range cn.fo.Step(time.Now(), ev) {
		cn.execute(a)
	}
	cn.publish(cn.fo.View())
}

// execute carries out one action. An adoption is done before the view
// that names this node is published (H2: a stanza routed by it finds the
// devices); what sends state to other nodes runs in the background.
func (cn *clusterNode) execute(a failover.Action) {
	switch a := a.(type) {
	case failover.Adopt:
		n := cn.adoptOwned(a)
		if n > 0 && !a.FromDisk {
			cn.log.Warn("cluster: took over the sessions of a lost node", "sessions", n)
		}
	case failover.Forget:
		self := cn.c.Name()
		m, _ := cn.c.Member(self)
		n := cn.n.router.Forget(func(dev string) bool { return a.Placement.Primary(userOf(dev)) == self }, m.Meta.C2SAddr)
		cn.log.Warn("cluster: this node was declared dead; its users were taken over: resynchronising", "devices", n)
	case failover.Welcome:
		cn.spawn(func() {
			m, ok := cn.c.Member(a.Member)
			if !ok {
				return
			}
			cn.sendAccounts(m.Name)
			cn.handover(m, a.Before, a.TakenOver)
		})
	case failover.StartResync:
		cn.spawn(func() {
			defer cn.inbox.put(failover.JobDone{})
			cn.resyncBackups(a.Why, func(user, backup string) bool { return a.Pick.Has(user, backup) })
		})
	case failover.StartSweep:
		cn.spawn(func() {
			defer cn.inbox.put(failover.JobDone{})
			cn.sweepStale()
		})
	}
}

// --- cluster.MembershipListener and the failover records: into the inbox ---

// Events may come from inside cluster.New, before the node knows its
// Cluster: they wait for it (on the cluster's own event goroutine).

func (cn *clusterNode) NodeJoined(m cluster.Member) {
	if cn.awaitJoined() {
		cn.inbox.put(failover.MemberJoined{Name: m.Name, Members: cn.c.Placement().Nodes()})
	}
}

func (cn *clusterNode) NodeLeft(m cluster.Member) { cn.lost(m) }

func (cn *clusterNode) NodeFailed(m cluster.Member) { cn.lost(m) }

func (cn *clusterNode) lost(m cluster.Member) {
	if cn.n.inCalls != nil {
		cn.n.inCalls.nodeLost(m.Name) // its calls went with it (M7)
	}
	if cn.awaitJoined() {
		cn.inbox.put(failover.MemberLost{Name: m.Name, Members: cn.c.Placement().Nodes()})
	}
}

func (cn *clusterNode) NodeUpdated(cluster.Member) {}

// ApplyTakenOver: from took this node for dead and took its users over
// (it was paused or cut off); the handover's records follow. They must
// find this node's stale copy of those users forgotten, so the record is
// applied once the machine has stepped DeclaredDead (bounded: a node that
// stops does not hold the stream).
func (cn *clusterNode) ApplyTakenOver(from string, r cluster.Record) (func() error, error) {
	done := cn.inbox.putWait(failover.DeclaredDead{})
	select {
	case <-done:
	case <-cn.quit:
	case <-time.After(syncWait):
		cn.log.Warn("cluster: a member took this node's users over; not yet forgotten here", "node", from)
	}
	return nil, nil
}

func (cn *clusterNode) ApplyHandoverEnd(from string, r cluster.Record) (func() error, error) {
	served, err := failover.DecodeHandoverEnd(r)
	if err != nil {
		return nil, err
	}
	cn.inbox.put(failover.HandoverEnded{From: from, Served: served})
	return nil, nil
}

// Resync: records for peer were dropped (replication backpressure); the
// users it backs up get their whole state again (cluster.Resyncer). It is
// called within a Send, under the router's lock: it only tells the
// machine, which coalesces a burst into one resync.
func (cn *clusterNode) Resync(peer string) { cn.inbox.put(failover.Dropped{Peer: peer}) }

// --- routing by the published view ---

// adoptWait bounds how long a stanza waits for this node to take its
// recipient over (a takeover, or the sync after a start).
const adoptWait = 2 * syncWait

// syncWait is the sync window (failover.Config.SyncWait).
const syncWait = 5 * time.Second

// Home says where user's devices are held, waiting while this node takes
// them over (bounded by adoptWait).
func (cn *clusterNode) Home(user string) (bool, string, string) {
	if !cn.awaitServed(user, func(serving string) bool { return serving != "" }) {
		return true, "", ""
	}
	v, _ := cn.currentView()
	node := v.Serving(user)
	if node == cn.c.Name() {
		return true, "", ""
	}
	m, _ := cn.c.Member(node)
	return false, node, m.Meta.C2SAddr
}

// Claimed is Home for a stream another node relays here because its view
// names this node: this one may not have declared the same failure yet.
func (cn *clusterNode) Claimed(user string) (bool, string, string) {
	self := cn.c.Name()
	cn.awaitServed(user, func(serving string) bool { return serving == self })
	return cn.Home(user)
}

// Rehome says which node serves user once gone no longer does: the edge
// of a relayed client carries its stream on there (H7).
func (cn *clusterNode) Rehome(user, gone string) (string, string, bool) {
	if !cn.awaitServed(user, func(serving string) bool { return serving != "" && serving != gone }) {
		return "", "", false
	}
	v, _ := cn.currentView()
	node := v.Serving(user)
	m, ok := cn.c.Member(node)
	return node, m.Meta.C2SAddr, ok && m.Meta.C2SAddr != ""
}

// AwaitMoved blocks until the view serves user from a node other than
// node, or stop closes.
func (cn *clusterNode) AwaitMoved(user, node string, stop <-chan struct{}) bool {
	for {
		v, changed := cn.currentView()
		if serving := v.Serving(user); serving != "" && serving != node {
			return true
		}
		select {
		case <-changed:
		case <-stop:
			return false
		case <-cn.quit:
			return false
		}
	}
}

// awaitServed waits until ok accepts the node the view names for user;
// false (and a warning) if adoptWait passed first.
func (cn *clusterNode) awaitServed(user string, ok func(serving string) bool) bool {
	var deadline <-chan time.Time // made only when a stanza must wait: this runs for every one
	for {
		v, changed := cn.currentView()
		if ok(v.Serving(user)) {
			return true
		}
		if deadline == nil {
			t := time.NewTimer(adoptWait)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-changed:
		case <-deadline:
			cn.log.Warn("cluster: takeover not done in time; routing anyway", "user", cn.n.router.Redact(user))
			return false
		case <-cn.quit:
			return false
		}
	}
}

// Serving names the node whose session manager holds user's devices, ""
// while this node takes them over or syncs (failover.View.Serving):
// stanzas routed meanwhile wait, in order, in the router's lane for the
// user instead of reaching a session manager that does not hold the
// devices yet (H2: they went to the offline store, unpushed, and overtook
// what the old primary queued).
func (cn *clusterNode) Serving(user string) string {
	v, _ := cn.currentView()
	return v.Serving(user)
}

// remote is jsm's Config.Remote: whether user's devices are held
// elsewhere, or not held here yet.
func (cn *clusterNode) remote(user string) bool {
	select {
	case <-cn.joined:
	default:
		return false // not yet a member: everyone is served here
	}
	v, _ := cn.currentView()
	if v.Placement.Primary(user) == "" {
		return false // no member known: everyone is served here
	}
	return v.Serving(user) != v.Self
}

// awaitHome holds a forwarded stanza whose recipient this node does not
// yet hold: the sender's node noticed a failure first, and routing it
// before this node has adopted the recipient's devices would miss them.
// The wait is bounded by failure detection (2–3 s) and adoptWait.
func (cn *clusterNode) awaitHome(el *stanza.Element) {
	to, err := jid.Parse(el.Get("to"))
	if err != nil {
		return
	}
	self := cn.c.Name()
	cn.awaitServed(to.Bare().String(), func(serving string) bool { return serving == self })
}
