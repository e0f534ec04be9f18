package cluster

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Delegates are the caller's side of a Cluster. Any may be nil.
type Delegates struct {
	// Membership hears of joins, leaves, failures and updates.
	Membership MembershipListener
	// Applier applies what peers replicate to this node; nil makes this
	// node refuse to be anyone's backup.
	Applier Applier
	// Resyncer hears of records dropped by replication backpressure.
	Resyncer Resyncer
}

// Cluster is this node's membership in the cluster: memberlist for
// membership and failure detection, the current Placement, and the
// Replicator. Safe for concurrent use.
type Cluster struct {
	cfg Config
	log *slog.Logger
	m   *Metrics
	ml  *memberlist.Memberlist
	rep *Replicator
	tcp *TCPTransport // nil with Config.Transport
	// fwd carries stanzas forwarded to the node where their recipient
	// lives, on its own streams: a forward is acknowledged only once
	// durable, replication records at once, and sharing one in-order
	// stream would let two nodes wait on each other's acknowledgements.
	fwd    *Replicator
	fwdTCP *TCPTransport
	lis    MembershipListener
	self   string

	placement atomic.Pointer[Placement]

	mu      sync.Mutex
	members map[string]*Member
	meta    NodeMeta // this node's, as advertised
	events  []event
	kick    chan struct{}
	done    chan struct{}
	stopped bool
	wg      sync.WaitGroup
}

type eventKind uint8

const (
	evJoined eventKind = iota
	evLeft
	evFailed
	evUpdated
)

var eventNames = [...]string{"joined", "left", "failed", "updated"}

type event struct {
	kind eventKind
	m    Member
}

// New starts this node: the replication listener, memberlist, and (with
// Config.Join) joining the cluster. It returns once memberlist runs; if no
// Join address answers, it keeps trying in the background (H6) and says
// so in the log.
func New(cfg Config, d Delegates) (*Cluster, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "cluster"),
		m:       cfg.Metrics,
		lis:     d.Membership,
		self:    cfg.NodeName,
		members: make(map[string]*Member),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	if c.lis == nil {
		c.lis = NopListener{}
	}
	c.placement.Store(NewPlacement(nil))
	c.meta = cfg.Meta
	if c.meta.Started == 0 {
		c.meta.Started = uint64(time.Now().UnixMilli())
	}

	// Replication transport first: its port goes into the metadata.
	tr := cfg.Transport
	if tr == nil {
		t, err := ListenTCP(TCPConfig{
			Name:      cfg.NodeName,
			BindAddr:  net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.ReplicationPort)),
			Resolve:   c.resolve,
			SecretKey: cfg.SecretKey,
			Label:     cfg.Label,
			MaxFrame:  max(cfg.Replication.MaxFrame, DefaultReplicatorConfig().MaxFrame) + 64<<10,
			Logger:    c.log,
		})
		if err != nil {
			return nil, err
		}
		c.tcp, tr = t, t
		if c.meta.ClusterAddr == "" {
			// An empty host means "the address you gossip with me on".
			host := cfg.AdvertiseAddr
			if host == "" && cfg.BindAddr != "0.0.0.0" && cfg.BindAddr != "::" {
				host = cfg.BindAddr
			}
			c.meta.ClusterAddr = net.JoinHostPort(host, strconv.Itoa(t.Addr().(*net.TCPAddr).Port))
		}
	}
	if _, err := c.meta.Encode(); err != nil {
		tr.Close()
		return nil, err
	}
	rc := cfg.Replication
	rc.Name, rc.Logger, rc.Metrics, rc.Resyncer = cfg.NodeName, cfg.Logger, cfg.Metrics, d.Resyncer
	rep, err := NewReplicator(rc, tr, d.Applier)
	if err != nil {
		tr.Close()
		return nil, err
	}
	c.rep = rep
	if cfg.Transport == nil {
		ft, err := ListenTCP(TCPConfig{
			Name:      cfg.NodeName,
			BindAddr:  net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.ForwardPort)),
			Resolve:   c.resolveForward,
			SecretKey: cfg.SecretKey,
			Label:     cfg.Label + "/forward",
			MaxFrame:  max(cfg.Replication.MaxFrame, DefaultReplicatorConfig().MaxFrame) + 64<<10,
			Logger:    c.log,
		})
		if err != nil {
			rep.Close()
			return nil, err
		}
		c.fwdTCP = ft
		host, _, _ := net.SplitHostPort(c.meta.ClusterAddr)
		c.meta.ForwardAddr = net.JoinHostPort(host, strconv.Itoa(ft.Addr().(*net.TCPAddr).Port))
		fc := rc
		fc.Resyncer = nil
		fc.FailFast = true // the router retries a forward wherever its user lives then
		if c.fwd, err = NewReplicator(fc, ft, d.Applier); err != nil {
			rep.Close()
			ft.Close()
			return nil, err
		}
	}

	c.wg.Add(1)
	go c.dispatch()

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr, mc.BindPort = cfg.BindAddr, cfg.BindPort
	mc.AdvertiseAddr, mc.AdvertisePort = cfg.AdvertiseAddr, cfg.AdvertisePort
	mc.SecretKey = cfg.SecretKey
	mc.Label = cfg.Label
	mc.ProbeInterval, mc.ProbeTimeout = cfg.ProbeInterval, cfg.ProbeTimeout
	mc.SuspicionMult, mc.SuspicionMaxTimeoutMult = cfg.SuspicionMult, cfg.SuspicionMaxTimeoutMult
	mc.GossipInterval, mc.GossipNodes = cfg.GossipInterval, cfg.GossipNodes
	mc.PushPullInterval = cfg.PushPullInterval
	mc.DeadNodeReclaimTime = cfg.DeadNodeReclaimTime
	mc.Delegate = (*mlDelegate)(c)
	mc.Events = (*mlEvents)(c)
	mc.Ping = (*mlPing)(c)
	mc.Logger = log.New(&logWriter{c: c}, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		c.stop()
		rep.Close()
		return nil, fmt.Errorf("cluster: memberlist: %w", err)
	}
	c.ml = ml
	if len(cfg.Join) > 0 {
		if _, err := ml.Join(cfg.Join); err != nil {
			c.log.Warn("cluster join failed, retrying in the background", "join", cfg.Join, "err", err)
			c.wg.Add(1)
			go c.rejoin()
		}
	}
	return c, nil
}

// Name is this node's name.
func (c *Cluster) Name() string { return c.self }

// GossipAddr is the address memberlist is reachable at, for other nodes'
// Join lists (tests bind port 0).
func (c *Cluster) GossipAddr() string {
	n := c.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Join contacts the given members (host:port) and merges state with
// them; it returns how many answered.
func (c *Cluster) Join(addrs ...string) (int, error) {
	n, err := c.ml.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("cluster: join: %w", err)
	}
	return n, nil
}

func (c *Cluster) rejoin() {
	defer c.wg.Done()
	d := c.cfg.RejoinInterval
	for {
		t := time.NewTimer(d)
		select {
		case <-c.done:
			t.Stop()
			return
		case <-t.C:
		}
		if c.ml.NumMembers() > 1 {
			return // someone found us
		}
		if _, err := c.ml.Join(c.cfg.Join); err == nil {
			c.log.Info("cluster joined", "join", c.cfg.Join)
			return
		}
		d = min(d*2, 30*time.Second)
	}
}

// Leave tells the others this node is leaving (they report it as left,
// not failed, and its users move to their backups) and waits up to
// Config.LeaveTimeout for the news to spread. Call Shutdown after it.
func (c *Cluster) Leave() error {
	c.mu.Lock()
	if c.stopped {
		// memberlist panics on a Leave after Shutdown.
		c.mu.Unlock()
		return nil
	}
	c.meta.Leaving = true
	c.mu.Unlock()
	if err := c.ml.UpdateNode(c.cfg.LeaveTimeout / 2); err != nil {
		c.log.Warn("cluster leave: metadata update not confirmed", "err", err)
	}
	if err := c.ml.Leave(c.cfg.LeaveTimeout); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// Stopped reports whether Shutdown ran: the node is no member any more,
// and has nothing to leave.
func (c *Cluster) Stopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

// Shutdown stops gossip and replication at once, without telling anyone:
// to the others it looks like a crash (Leave first for a graceful exit).
// Pending Send waits fail with ErrReplicatorClosed.
func (c *Cluster) Shutdown() error {
	err := c.ml.Shutdown()
	c.stop()
	if e := c.rep.Close(); err == nil {
		err = e
	}
	if c.fwd != nil {
		if e := c.fwd.Close(); err == nil {
			err = e
		}
	}
	return err
}

// Forward sends records (stanzas) to the node where their recipient
// lives, on the forwarding streams; wait returns once the node applied
// them and their waits returned (Applier). With an in-memory
// Config.Transport, forwards share the replication streams.
// A node that is not a live member gives ErrPeerGone at once: a link to
// it would be made anew, and its records wait AckTimeout for nothing.
func (c *Cluster) Forward(ctx context.Context, node string, recs ...Record) (wait func() error) {
	if c.fwd == nil {
		return c.Send(ctx, node, recs...)
	}
	if m, ok := c.Member(node); !ok || !m.State.Live() {
		return errWait(ErrPeerGone)
	}
	return c.fwd.Send(ctx, node, recs...)
}

func (c *Cluster) stop() {
	c.mu.Lock()
	if !c.stopped {
		c.stopped = true
		close(c.done)
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// Members returns every member this node knows of, itself included,
// dead and left ones too, sorted by name.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, *m)
	}
	sortMembers(out)
	return out
}

// Member returns one member by name.
func (c *Cluster) Member(name string) (Member, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.members[name]
	if !ok {
		return Member{}, false
	}
	return *m, true
}

// Placement returns the placement over the live members (alive or
// suspect) as of now. It changes when a member joins, fails or leaves.
func (c *Cluster) Placement() *Placement { return c.placement.Load() }

// Replicator is the node's replication channel (Send, Broadcast, Lag).
func (c *Cluster) Replicator() *Replicator { return c.rep }

// Send replicates recs to peer; see Replicator.Send. A peer that is not
// a live member gives ErrPeerGone at once.
func (c *Cluster) Send(ctx context.Context, peer string, recs ...Record) (wait func() error) {
	if peer != "" {
		if m, ok := c.Member(peer); !ok || !m.State.Live() {
			c.m.degraded.WithLabelValues("peer-gone").Inc()
			return errWait(ErrPeerGone)
		}
	}
	return c.rep.Send(ctx, peer, recs...)
}

// Broadcast sends recs to every other live member (accounts); see
// Replicator.Broadcast. A member that joins later does not get them: the
// caller sends the full set on NodeJoined.
func (c *Cluster) Broadcast(ctx context.Context, recs ...Record) (wait func() error) {
	return c.rep.Broadcast(ctx, c.Placement().Nodes(), recs...)
}

// Status reports the members, this node's roles over users (nil: not
// counted) and the replication lag.
func (c *Cluster) Status(users iter.Seq[string]) Status {
	s := Status{
		Node:        c.self,
		Members:     c.Members(),
		Replication: c.rep.Lag(),
		Inbound:     c.rep.Inbound(),
		Degraded:    c.rep.Degraded(),
	}
	if users != nil {
		r := CountRoles(c.Placement(), c.self, users)
		s.Roles = &r
	}
	return s
}

// resolve gives the replication address of a member.
func (c *Cluster) resolve(node string) (string, error) {
	return c.resolveAddr(node, func(m NodeMeta) string { return m.ClusterAddr })
}

// resolveForward gives the forwarding address of a member.
func (c *Cluster) resolveForward(node string) (string, error) {
	return c.resolveAddr(node, func(m NodeMeta) string { return m.ForwardAddr })
}

func (c *Cluster) resolveAddr(node string, pick func(NodeMeta) string) (string, error) {
	c.mu.Lock()
	m, ok := c.members[node]
	var addr, gossip string
	live := false
	if ok {
		addr, gossip, live = pick(m.Meta), m.Addr, m.State.Live()
	}
	c.mu.Unlock()
	if !live {
		return "", fmt.Errorf("no live member %q", node)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("member %q has no cluster address", node)
	}
	if host == "" {
		host, _, _ = net.SplitHostPort(gossip)
	}
	return net.JoinHostPort(host, port), nil
}

// --- membership bookkeeping ---

// observe records a member's new state and queues the event; called from
// memberlist's callbacks (under memberlist's locks: no calls back into it).
func (c *Cluster) observe(n *memberlist.Node, st State, kind eventKind) {
	meta, err := DecodeNodeMeta(n.Meta)
	if err != nil {
		c.log.Warn("cluster member metadata unreadable", "member", n.Name, "err", err)
	}
	c.mu.Lock()
	m := c.members[n.Name]
	if m == nil {
		m = &Member{Name: n.Name}
		c.members[n.Name] = m
	}
	if kind == evLeft && m.Meta.Leaving {
		st = StateLeft
	}
	if kind == evLeft {
		if st == StateLeft {
			kind = evLeft
		} else {
			kind = evFailed
		}
	} else {
		m.Meta = meta
		m.Addr = n.Address()
	}
	prevLive := m.State.Live()
	if m.State != st || m.Since.IsZero() {
		m.Since = time.Now()
	}
	m.State = st
	if prevLive != st.Live() || kind == evJoined {
		c.placement.Store(c.livePlacementLocked())
	}
	c.queueLocked(kind, *m)
	c.mu.Unlock()
}

// setSuspect moves a live member between alive and suspect.
func (c *Cluster) setSuspect(name string, suspect bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[name]
	if m == nil || !m.State.Live() {
		return
	}
	want := StateAlive
	if suspect {
		want = StateSuspect
	}
	if m.State == want {
		return
	}
	m.State, m.Since = want, time.Now()
	c.queueLocked(evUpdated, *m)
}

func (c *Cluster) livePlacementLocked() *Placement {
	var names []string
	for _, m := range c.members {
		if m.State.Live() {
			names = append(names, m.Name)
		}
	}
	return NewPlacement(names)
}

func (c *Cluster) queueLocked(k eventKind, m Member) {
	c.events = append(c.events, event{k, m})
	counts := map[State]int{}
	for _, mm := range c.members {
		counts[mm.State]++
	}
	for s := StateAlive; s <= StateLeft; s++ {
		c.m.members.WithLabelValues(s.String()).Set(float64(counts[s]))
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// dispatch delivers events to the listener, one at a time, outside every
// lock.
func (c *Cluster) dispatch() {
	defer c.wg.Done()
	for {
		select {
		case <-c.kick:
		case <-c.done:
			return
		}
		for {
			c.mu.Lock()
			if len(c.events) == 0 {
				c.mu.Unlock()
				break
			}
			ev := c.events[0]
			c.events = c.events[1:]
			c.mu.Unlock()
			c.m.memberEvents.WithLabelValues(eventNames[ev.kind]).Inc()
			switch ev.kind {
			case evJoined:
				c.log.Info("cluster member joined", "member", ev.m.Name)
				c.lis.NodeJoined(ev.m)
			case evLeft:
				c.log.Info("cluster member left", "member", ev.m.Name)
				c.rep.PeerGone(ev.m.Name)
				if c.fwd != nil {
					c.fwd.PeerGone(ev.m.Name)
				}
				c.lis.NodeLeft(ev.m)
			case evFailed:
				c.log.Warn("cluster member failed", "member", ev.m.Name)
				c.rep.PeerGone(ev.m.Name)
				if c.fwd != nil {
					c.fwd.PeerGone(ev.m.Name)
				}
				c.lis.NodeFailed(ev.m)
			case evUpdated:
				c.lis.NodeUpdated(ev.m)
			}
		}
	}
}

// --- memberlist delegates (unexported: callers see MembershipListener) ---

type mlDelegate Cluster

func (d *mlDelegate) NodeMeta(limit int) []byte {
	c := (*Cluster)(d)
	c.mu.Lock()
	m := c.meta
	c.mu.Unlock()
	b, err := m.Encode()
	if err != nil || len(b) > limit {
		c.log.Error("cluster node metadata too large", "err", err)
		return nil
	}
	return b
}
func (d *mlDelegate) NotifyMsg([]byte)                {}
func (d *mlDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *mlDelegate) LocalState(bool) []byte          { return nil }
func (d *mlDelegate) MergeRemoteState([]byte, bool)   {}

type mlEvents Cluster

func (e *mlEvents) NotifyJoin(n *memberlist.Node) {
	(*Cluster)(e).observe(n, StateAlive, evJoined)
}
func (e *mlEvents) NotifyLeave(n *memberlist.Node) {
	(*Cluster)(e).observe(n, StateDead, evLeft)
}
func (e *mlEvents) NotifyUpdate(n *memberlist.Node) {
	(*Cluster)(e).observe(n, StateAlive, evUpdated)
}

type mlPing Cluster

func (p *mlPing) AckPayload() []byte { return nil }
func (p *mlPing) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	(*Cluster)(p).setSuspect(other.Name, false)
}

// logWriter turns memberlist's "[LEVEL] memberlist: text" lines into slog
// records, and reads from them the one thing memberlist v0.7.0 does not
// expose otherwise: that this node's probes of a member failed ("Suspect
// X has failed, no acks received"), which Members reports as suspect.
type logWriter struct{ c *Cluster }

func (w *logWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	for _, l := range []struct {
		tag string
		lvl slog.Level
	}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}} {
		if strings.HasPrefix(line, l.tag) {
			level = l.lvl
			line = strings.TrimSpace(line[len(l.tag):])
			break
		}
	}
	const sus = "memberlist: Suspect "
	if i := strings.Index(line, sus); i >= 0 {
		rest := line[i+len(sus):]
		if j := strings.Index(rest, " has failed"); j > 0 {
			w.c.setSuspect(rest[:j], true)
		}
	}
	w.c.log.Log(context.Background(), level, line, "source", "memberlist")
	return len(p), nil
}

func sortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
}
