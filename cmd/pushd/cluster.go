package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"mellium.im/xmpp/jid"

	"pushd/cluster"
	"pushd/cluster/failover"
	"pushd/component"
	"pushd/component/dispatch"
	"pushd/component/sip"
	"pushd/internal/admin"
	"pushd/internal/stanza"
	"pushd/internal/store"
	"pushd/jsm"
	"pushd/queue"
	"pushd/router"
)

// clusterSection is [cluster]. A node without node_name runs alone.
type clusterSection struct {
	NodeName    string   `toml:"node_name"`
	Bind        string   `toml:"bind"`        // memberlist host:port (default 0.0.0.0:7946)
	Advertise   string   `toml:"advertise"`   // host:port others reach it at (default: bind)
	Replication string   `toml:"replication"` // replication host:port (default: bind's host, port+1)
	Join        []string `toml:"join"`
	// SecretKey is base64 of 16, 24 or 32 bytes; it encrypts gossip and
	// seals replication.
	SecretKey string `toml:"secret_key"`
	// Redirect sends a client whose user another member serves there
	// (see-other-host) instead of carrying its stream there (H7).
	Redirect bool `toml:"redirect"`
	// sweepDelay shortens failover.Config.SweepDelay in tests.
	sweepDelay time.Duration
	// C2SAdvertise is the address clients are redirected to when their
	// sessions live on this node (default: [c2s] listen).
	C2SAdvertise string `toml:"c2s_advertise"`
}

func (c clusterSection) enabled() bool { return c.NodeName != "" }

// relayKey is the key by which members log relayed clients in at each
// other (router.Config.RelayKey), derived from the cluster's secret so
// that it is not the gossip key itself; nil without a secret: clients of
// other members are redirected.
func relayKey(secret string) []byte {
	k, err := base64.StdEncoding.DecodeString(secret)
	if err != nil || len(k) == 0 {
		return nil
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte("pushd edge relay key"))
	return m.Sum(nil)
}

// clusterConfig maps [cluster] onto cluster.Config.
func clusterConfig(cfg fileConfig, adminAddr string, log *slog.Logger, reg prometheus.Registerer) (cluster.Config, error) {
	cs := cfg.Cluster
	cc := cluster.DefaultConfig()
	cc.NodeName = cs.NodeName
	cc.Join = cs.Join
	cc.Logger = log
	cc.Metrics = cluster.NewMetrics(reg)
	split := func(addr string) (string, int, error) {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			return "", 0, err
		}
		n, err := strconv.Atoi(p)
		return h, n, err
	}
	if cs.Bind != "" {
		h, p, err := split(cs.Bind)
		if err != nil {
			return cc, fmt.Errorf("config: cluster.bind: %w", err)
		}
		cc.BindAddr, cc.BindPort = h, p
		cc.ReplicationPort = p + 1
	}
	if cs.Advertise != "" {
		h, p, err := split(cs.Advertise)
		if err != nil {
			return cc, fmt.Errorf("config: cluster.advertise: %w", err)
		}
		cc.AdvertiseAddr, cc.AdvertisePort = h, p
	}
	if cs.Replication != "" {
		_, p, err := split(cs.Replication)
		if err != nil {
			return cc, fmt.Errorf("config: cluster.replication: %w", err)
		}
		cc.ReplicationPort = p
	}
	if cs.SecretKey != "" {
		k, err := base64.StdEncoding.DecodeString(cs.SecretKey)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return cc, errors.New("config: cluster.secret_key must be base64 of 16, 24 or 32 bytes")
		}
		cc.SecretKey = k
	}
	c2sAddr := c2sAdvertised(cfg)
	if err := checkRedirect(c2sAddr); err != nil {
		return cc, fmt.Errorf("config: cluster.c2s_advertise (default [c2s] listen): %w", err)
	}
	cc.Meta.C2SAddr = c2sAddr
	cc.Meta.AdminAddr = adminAddr
	if cfg.SIP.Listen != "" {
		cc.Meta.SIPAddr = reachable(sipAdvertised(cfg))
	}
	cc.Meta.Build = version
	return cc, nil
}

// checkRedirect makes sure addr is what see-other-host may carry to a
// client (RFC 6120 §4.9.3.19: a host and port): @xmpp/client cannot
// follow it without the port, and a wildcard host names no node.
func checkRedirect(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a TCP port", addr, port)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%q names no host clients can reach; set the address they dial", addr)
	}
	return nil
}

// clusterNode joins the node to its cluster: it is the router's Cluster
// (placement, forwarding, replication to backups), the Applier of what
// peers replicate here, and the listener that adopts a failed primary's
// users (BEHAVIOUR H1–H4).
type clusterNode struct {
	n   *node
	c   *cluster.Cluster
	log *slog.Logger

	// replicas are the hibernating sessions this node holds as backup,
	// by device.
	mu       sync.Mutex
	replicas map[string]router.SessionState
	// bg counts the goroutines spawn started; none starts once stopping.
	bgMu     sync.Mutex
	bg       sync.WaitGroup
	stopping bool
	quit     chan struct{} // closed by stop

	// fo is the failover protocol, stepped by run alone; view is what it
	// last published (failover.go).
	fo           *failover.Machine
	inbox        inbox
	view         atomic.Pointer[viewState]
	syncingGauge prometheus.Gauge

	// disk is what this node's own store held at start. In a cluster it is
	// served only once the other members handed over what they hold for
	// this node's users (they may have taken them over while it was
	// gone, and what it has is then stale): syncing until then.
	disk jsm.State
	// joined closes once c is set: membership events may come from
	// inside cluster.New.
	joined chan struct{}
}

func newClusterNode(n *node, disk jsm.State, fcfg failover.Config, reg prometheus.Registerer) *clusterNode {
	cn := &clusterNode{n: n, log: n.log, replicas: make(map[string]router.SessionState),
		disk: disk, joined: make(chan struct{}), quit: make(chan struct{}), fo: failover.New(fcfg),
		syncingGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushd_cluster_syncing",
			Help: "1 while this node waits for the other members' handovers (at start, after being taken for dead) and serves none of its users yet.",
		})}
	reg.MustRegister(cn.syncingGauge)
	cn.inbox.signal = make(chan struct{}, 1)
	cn.publish(cn.fo.View())
	return cn
}

// join starts membership and replication; the router must exist (peers
// may replicate to this node at once) and must not serve clients yet
// (Home needs the membership).
func (cn *clusterNode) join(cc cluster.Config) error {
	c, err := cluster.New(cc, cluster.Delegates{Membership: cn, Applier: cn.kinds(), Resyncer: cn})
	if err != nil {
		return err
	}
	cn.c = c
	close(cn.joined)
	return nil
}

// spawn runs f in the background unless the node is stopping; stop waits
// for it, so that nothing reaches the stores once they close.
func (cn *clusterNode) spawn(f func()) {
	cn.bgMu.Lock()
	defer cn.bgMu.Unlock()
	if cn.stopping {
		return
	}
	cn.bg.Add(1)
	go func() {
		defer cn.bg.Done()
		f()
	}()
}

// awaitJoined waits until the node is a member; false if it stops first.
func (cn *clusterNode) awaitJoined() bool {
	select {
	case <-cn.joined:
		return true
	case <-cn.quit:
		return false
	}
}

// handOff is a graceful stop's first step (O7): this node leaves the
// cluster, so that the others take its users over from their replicas at
// once, without failure detection, and then sends each of its clients to
// the node that serves its user now (see-other-host), where it resumes
// its stream. A node relaying a client's stream carries it on by itself
// when its view moves the user. Nothing acknowledged is lost: every
// acknowledged stanza is on the backups already (DESIGN rule 2).
func (cn *clusterNode) handOff() {
	if cn.c == nil || cn.c.Stopped() {
		return // not a member (any more): as after a crash, the others take over
	}
	start := time.Now()
	self := cn.c.Name()
	var rest []string
	for _, m := range cn.c.Members() {
		if m.Name != self && m.State.Live() {
			rest = append(rest, m.Name)
		}
	}
	if len(rest) == 0 {
		return // alone: nobody to hand over to
	}
	if err := cn.c.Leave(); err != nil {
		cn.log.Warn("cluster: leaving before the stop failed; the others will detect it", "err", err)
	}
	after := cluster.NewPlacement(rest)
	sent := 0
	for _, name := range rest {
		m, ok := cn.c.Member(name)
		if !ok {
			continue
		}
		sent += cn.n.router.SendAway(func(dev string) bool { return after.Primary(userOf(dev)) == name }, m.Meta.C2SAddr)
	}
	cn.log.Warn("cluster: left; clients sent to the nodes that took their users over", "devices", sent, "took", time.Since(start))
}

func (cn *clusterNode) stop() {
	cn.bgMu.Lock()
	if !cn.stopping {
		cn.stopping = true
		close(cn.quit)
	}
	cn.bgMu.Unlock()
	defer cn.bg.Wait()
	if cn.c == nil {
		return // join failed: only the background work to end
	}
	_ = cn.c.Leave()
	_ = cn.c.Shutdown()
}

func userOf(device string) string {
	if i := strings.IndexByte(device, '/'); i >= 0 {
		return device[:i]
	}
	return device
}

// --- router.Cluster (Home, Serving: failover.go) ---

func (cn *clusterNode) Forward(node string, st *stanza.Element) func() error {
	w := cn.c.Forward(context.Background(), node, router.StanzaRecord(st))
	return func() error {
		if err := w(); err != nil {
			return fmt.Errorf("forward to %s: %w", node, err)
		}
		return nil
	}
}

// toBackup sends records to the backup of the device's user. With no live
// backup the node runs degraded (local-durable only): cluster logs the
// alarm and counts it, and the sender is acknowledged all the same.
//
// While a member comes back, this node still holds the users it hands
// that member, whose placement already names it their backup: their
// copies go to the returning primary then, which the handover completes.
// They were sent to this node itself and failed, which closed the
// writer's stream (the chaos test's senders writing through a restart).
func (cn *clusterNode) toBackup(device string, recs ...cluster.Record) func() error {
	primary, backup := cn.c.Placement().PrimaryBackup(userOf(device))
	if backup == cn.c.Name() {
		if primary == backup {
			return func() error { return nil } // alone: local durability only
		}
		backup = primary
	}
	w := cn.c.Send(context.Background(), backup, recs...)
	return func() error {
		if err := w(); err != nil && !errors.Is(err, cluster.ErrDegraded) {
			return err
		}
		return nil
	}
}

func (cn *clusterNode) Enqueue(device string, entries []jsm.Entry) func() error {
	return cn.toBackup(device, appendRecord(device, entries))
}

func appendRecord(device string, entries []jsm.Entry) cluster.Record {
	return queue.AppendRecord(device, entries)
}

func (cn *clusterNode) Trim(device string, through uint64) func() error {
	return cn.toBackup(device, queue.TrimRecord(device, through))
}

func (cn *clusterNode) Remove(device string, seqs []uint64) func() error {
	return cn.toBackup(device, queue.RemoveRecord(device, seqs))
}

func (cn *clusterNode) Drop(device string) func() error {
	return cn.toBackup(device, queue.DropRecord(device))
}

func (cn *clusterNode) StoreOffline(user string, e jsm.Entry) func() error {
	return cn.toBackup(user, offlineRecord(user, []jsm.Entry{e}))
}

func (cn *clusterNode) TakeOffline(user string, through uint64) func() error {
	return cn.toBackup(user, queue.OfflineTrimRecord(user, through))
}

func offlineRecord(user string, msgs []jsm.Entry) cluster.Record {
	return queue.OfflineAddRecord(user, msgs)
}

// offlineReplace is the records that make a peer's copy of user's offline
// store equal to msgs.
func offlineReplace(user string, msgs []jsm.Entry) []cluster.Record {
	recs := []cluster.Record{queue.OfflineTrimRecord(user, ^uint64(0))}
	if len(msgs) > 0 {
		recs = append(recs, offlineRecord(user, msgs))
	}
	return recs
}

func (cn *clusterNode) Session(s router.SessionState) func() error {
	return cn.toBackup(s.Device, sessionRecord(s))
}

func sessionRecord(s router.SessionState) cluster.Record { return router.SessionRecord(s) }

func (cn *clusterNode) SessionGone(device string) func() error {
	return cn.toBackup(device, router.SessionGoneRecord(device))
}

// broadcastAccount sends an account to every other node ("pushd user add
// on any node reaches the whole cluster").
func (cn *clusterNode) broadcastAccount(user jid.JID, deleted bool) error {
	rec := store.AccountDeletedRecord(user)
	if !deleted {
		data, err := cn.n.db.Accounts().Credentials(user)
		if err != nil {
			return err
		}
		rec = store.AccountRecord(user, data)
	}
	if err := cn.c.Broadcast(context.Background(), rec)(); err != nil && !errors.Is(err, cluster.ErrDegraded) {
		return err
	}
	return nil
}

// registrationChanged is the push registry's OnChange: it copies a
// registration, as stored (nil: removed), to every other node, and its
// wait is what a registration command waits for before it is answered
// (H2). With no other member alive the registration is local-durable
// only, alarmed by the replicator.
func (cn *clusterNode) registrationChanged(node string, rec []byte) func() error {
	w := cn.c.Broadcast(context.Background(), component.RegistrationRecord(node, rec))
	return func() error {
		if err := w(); err != nil && !errors.Is(err, cluster.ErrDegraded) {
			return err
		}
		return nil
	}
}

// --- cluster.Applier: what peers replicate here ---

// kinds lists every record kind this node applies, each with its
// owner's handler: the queue's and offline store's records go to the
// queue's group commit, the others to what this node does with them. A
// kind's number is its owner's; one taken twice here does not compile.
func (cn *clusterNode) kinds() cluster.Kinds {
	q := cn.n.queue
	return cluster.Kinds{
		queue.KindAppend:           q.ApplyAppend,
		queue.KindTrim:             q.ApplyTrim,
		queue.KindRemove:           q.ApplyRemove,
		queue.KindDrop:             q.ApplyDrop,
		queue.KindOfflineAdd:       q.ApplyOfflineAdd,
		queue.KindOfflineTrim:      q.ApplyOfflineTrim,
		router.KindSession:         cn.ApplySession,
		router.KindSessionGone:     cn.ApplySessionGone,
		router.KindStanza:          cn.ApplyStanza,
		store.KindAccount:          cn.ApplyAccount,
		component.KindRegistration: cn.ApplyRegistry,
		failover.KindHandoverEnd:   cn.ApplyHandoverEnd,
		failover.KindTakenOver:     cn.ApplyTakenOver,
		sip.KindBinding:            cn.ApplySIPBinding,
		sip.KindInCall:             cn.ApplyInCall,
		dispatch.KindSwitch:        cn.ApplySwitch,
	}
}

// ApplyInCall: from has a call up (or none any more) for an AOR; jsm here
// hears the union of every node's (M7).
func (cn *clusterNode) ApplyInCall(from string, r cluster.Record) (func() error, error) {
	aor, active, err := sip.DecodeInCall(r)
	if err != nil {
		return nil, err
	}
	if cn.n.inCalls != nil {
		cn.n.inCalls.remoteChanged(from, aor, active)
	}
	return nil, nil
}

// inCallChanged is inCalls.tell: every node hears when an AOR's calls
// through this one start and end.
func (cn *clusterNode) inCallChanged(aor string, active bool) {
	w := cn.c.Broadcast(context.Background(), sip.InCallRecord(aor, active))
	go func() {
		if err := w(); err != nil && !errors.Is(err, cluster.ErrDegraded) {
			cn.log.Warn("cluster: in-call state not replicated", "err", err)
		}
	}()
}

// ApplySIPBinding takes a phone's binding registered at another node:
// before this node's SIP server runs, into its registrar; after, through
// the server, which forks a call it holds to the phone (C3).
func (cn *clusterNode) ApplySIPBinding(_ string, r cluster.Record) (func() error, error) {
	if cn.n.sipReg == nil {
		return nil, nil // SIP is off here
	}
	b, removed, err := sip.DecodeBinding(r)
	if err != nil {
		return nil, err
	}
	if srv := cn.n.sipServer.Load(); srv != nil {
		return nil, srv.ApplyBinding(b, removed)
	}
	_, err = cn.n.sipReg.Import(b, removed)
	return nil, err
}

// bindingChanged is the SIP registrar's OnChange: every node holds every
// binding, as every node holds every push registration.
func (cn *clusterNode) bindingChanged(b sip.Binding, removed bool) {
	w := cn.c.Broadcast(context.Background(), sip.BindingRecord(b, removed))
	go func() {
		if err := w(); err != nil && !errors.Is(err, cluster.ErrDegraded) {
			cn.log.Warn("cluster: SIP binding not replicated", "err", err)
		}
	}()
}

// sipPlacement is the SIP side's Placement: whether this node serves
// aor's user, and the SIP address of the node that does.
func (cn *clusterNode) sipPlacement(aor string) (bool, string) {
	node := cn.Serving(aor)
	if node == "" || node == cn.c.Name() {
		return node == cn.c.Name(), ""
	}
	m, _ := cn.c.Member(node)
	return false, m.Meta.SIPAddr
}

func (cn *clusterNode) ApplySession(_ string, r cluster.Record) (func() error, error) {
	s, err := router.DecodeSession(r)
	if err != nil {
		return nil, err
	}
	cn.mu.Lock()
	cn.replicas[s.Device] = s
	cn.mu.Unlock()
	return nil, nil
}

func (cn *clusterNode) ApplySessionGone(_ string, r cluster.Record) (func() error, error) {
	dev, err := router.DecodeSessionGone(r)
	if err != nil {
		return nil, err
	}
	cn.mu.Lock()
	delete(cn.replicas, dev)
	cn.mu.Unlock()
	return nil, nil
}

func (cn *clusterNode) ApplyAccount(_ string, r cluster.Record) (func() error, error) {
	j, data, deleted, err := store.DecodeAccount(r)
	if err != nil {
		return nil, err
	}
	if deleted {
		if err := cn.n.db.Accounts().Delete(j); err != nil && !errors.Is(err, store.ErrNoUser) {
			return nil, err
		}
		// Its offline messages may be here too (replicated, H2).
		if err := cn.n.queue.DropOffline(j.String()); err != nil {
			return nil, err
		}
		cn.n.router.Step(jsm.UserDeleted{User: j})
		return nil, nil
	}
	// Every member sends every account to a node that joins: most of them
	// it holds already, and a read is far cheaper than a durable write.
	if cur, err := cn.n.db.Accounts().Credentials(j); err == nil && bytes.Equal(cur, data) {
		return nil, nil
	}
	if err := cn.n.db.Accounts().PutCredentials(j, data); err != nil {
		return nil, err
	}
	cn.n.router.Step(jsm.UserAdded{User: j})
	return nil, nil
}

func (cn *clusterNode) ApplyRegistry(from string, r cluster.Record) (func() error, error) {
	if cn.n.push == nil {
		return nil, nil // no push component here: nothing to serve
	}
	return cn.n.push.registry.ApplyRegistration(from, r)
}

// ApplyStanza routes a forwarded stanza now; its wait returns once what
// it caused is as durable as a local stanza's would be.
func (cn *clusterNode) ApplyStanza(_ string, r cluster.Record) (func() error, error) {
	el, err := router.DecodeStanza(r)
	if err != nil {
		// A stanza we cannot read is dropped, not retried forever.
		return nil, nil
	}
	cn.awaitHome(el)
	return cn.n.router.StepForwardedAsync(el, len(r.Body)), nil
}

// handover gives a member that joined (or came back) the devices of the
// users it now serves (H4 fallback): their queue replaces whatever stale
// copy it has, their session lets the client resume there; HandoverEnd
// follows, after which it serves them.
// before is the placement under which this node held its users until m
// came (failover.Welcome).
func (cn *clusterNode) handover(m cluster.Member, before *cluster.Placement, takenOver bool) {
	// A node still syncing holds no devices yet: it releases nothing and
	// just says so, which keeps two joining nodes from waiting on each
	// other.
	place := cn.c.Placement()
	hs := cn.n.router.Release(func(dev string) bool { return place.Primary(userOf(dev)) == m.Name }, m.Meta.C2SAddr)
	var recs []cluster.Record
	if takenOver {
		// First: a member that was only paused forgets its stale copy
		// before the devices below arrive.
		recs = append(recs, failover.TakenOverRecord())
	}
	for _, h := range hs {
		dev := h.Session.Device
		recs = append(recs, queue.DropRecord(dev))
		if len(h.Entries) > 0 {
			recs = append(recs, appendRecord(dev, h.Entries))
		}
		recs = append(recs, sessionRecord(h.Session))
	}
	// The users this node served while m was away (it had taken them
	// over: its settled placement made it their primary): their offline
	// stores, and their names, for m's copy of them is stale. A member
	// that restarted before anyone noticed was not replaced, and its own
	// store is the truth.
	self := cn.c.Name()
	var served []string
	if before != nil {
		served = cn.localUsers(func(user string) bool { return place.Primary(user) == m.Name && before.Primary(user) == self })
	}
	cn.n.router.ResyncOffline(served, func(user string, msgs []jsm.Entry) func() error {
		recs = append(recs, offlineReplace(user, msgs)...)
		return func() error { return nil }
	})
	recs = append(recs, failover.HandoverEndRecord(served))
	if err := cn.c.Send(context.Background(), m.Name, recs...)(); err != nil {
		cn.log.Warn("cluster: handover to a returning member failed", "node", m.Name, "devices", len(hs), "err", err)
		return
	}
	if len(hs) > 0 {
		cn.log.Info("cluster: handed devices over to their returning primary", "node", m.Name, "devices", len(hs))
	}
}

// sweepStale drops the queues, sessions and offline messages this node
// holds of users it is neither primary nor backup of: copies from a time
// it was their backup. Kept, they would be served as they are should it
// become their backup, then their primary, again without a full copy in
// between for each device (a device gone meanwhile is in no copy).
// The failover machine runs one such job at a time, never while syncing.
func (cn *clusterNode) sweepStale() {
	self := cn.c.Name()
	theirs := func(user string) bool {
		p, b := cn.c.Placement().PrimaryBackup(user)
		return p != "" && p != self && b != self
	}
	cn.mu.Lock()
	sessions := 0
	for dev := range cn.replicas {
		if theirs(userOf(dev)) {
			delete(cn.replicas, dev)
			sessions++
		}
	}
	cn.mu.Unlock()
	var waits []func() error
	for _, d := range cn.n.queue.Devices() {
		if theirs(userOf(d.Device)) {
			waits = append(waits, cn.n.queue.DropAsync(d.Device))
		}
	}
	queues := len(waits)
	counts, err := cn.n.queue.OfflineCounts()
	if err != nil {
		cn.log.Error("cluster: counting offline messages", "err", err)
	}
	for u := range counts {
		if theirs(u) {
			waits = append(waits, cn.n.queue.TrimOfflineAsync(u, ^uint64(0)))
		}
	}
	for _, w := range waits {
		if err := w(); err != nil {
			cn.log.Error("cluster: stale copy not dropped", "err", err)
		}
	}
	if sessions+len(waits) > 0 {
		cn.log.Info("cluster: dropped copies of users this node no longer backs up", "sessions", sessions,
			"queues", queues, "offline", len(waits)-queues)
	}
}

// resyncBackups sends the whole replicated state of each device of the
// users this node serves whose backup pick selects: the backup's copy is
// dropped and replaced by the queue and session held here, and the offline
// store likewise (H2). Until it is done, what the backup holds of them is
// incomplete. One resync runs at a time.
// The failover machine runs one at a time, never while syncing.
func (cn *clusterNode) resyncBackups(why string, pick func(user, backup string) bool) {
	start := time.Now()
	self := cn.c.Name()
	place := cn.c.Placement()
	backupOf := func(dev string) string {
		user := userOf(dev)
		p, b := place.PrimaryBackup(user)
		if p != self || b == "" || !pick(user, b) {
			return ""
		}
		return b
	}
	mine := func(dev string) bool { return backupOf(dev) != "" }
	var devices []string
	for _, d := range cn.n.queue.Devices() {
		if mine(d.Device) {
			devices = append(devices, d.Device)
		}
	}
	waits := cn.n.router.Resync(devices, mine, func(h router.Handover) func() error {
		dev := h.Session.Device
		recs := []cluster.Record{queue.DropRecord(dev)}
		if len(h.Entries) > 0 {
			recs = append(recs, appendRecord(dev, h.Entries))
		}
		if h.Session.SMID != "" {
			recs = append(recs, sessionRecord(h.Session))
		} else {
			recs = append(recs, router.SessionGoneRecord(dev))
		}
		return cn.c.Send(context.Background(), backupOf(dev), recs...)
	})
	// Every such user's offline store, empty or not: the backup may hold
	// messages delivered since, which it would deliver again.
	users := cn.localUsers(func(user string) bool { return mine(user) })
	offline := cn.n.router.ResyncOffline(users, func(user string, msgs []jsm.Entry) func() error {
		return cn.c.Send(context.Background(), backupOf(user), offlineReplace(user, msgs)...)
	})
	failed := 0
	for _, w := range append(waits, offline...) {
		if w() != nil {
			failed++
		}
	}
	if len(waits)+len(offline) == 0 {
		return
	}
	if failed > 0 {
		cn.log.Warn("cluster: backups not resynchronised", "why", why, "devices", len(waits), "users", len(offline), "failed", failed)
		return
	}
	cn.log.Info("cluster: backups resynchronised", "why", why, "devices", len(waits), "users", len(offline),
		"took", time.Since(start).Round(time.Millisecond))
}

// localUsers lists the accounts (every node holds all of them) that keep
// selects.
func (cn *clusterNode) localUsers(keep func(user string) bool) []string {
	all, err := cn.n.db.Accounts().List()
	if err != nil {
		cn.log.Error("cluster: listing accounts", "err", err)
		return nil
	}
	var users []string
	for _, u := range all {
		if s := u.String(); keep(s) {
			users = append(users, s)
		}
	}
	return users
}

func (cn *clusterNode) sendAccounts(to string) {
	users, err := cn.n.db.Accounts().List()
	if err != nil {
		cn.log.Error("cluster: listing accounts", "err", err)
		return
	}
	var recs []cluster.Record
	for _, u := range users {
		data, err := cn.n.db.Accounts().Credentials(u)
		if err != nil {
			continue
		}
		recs = append(recs, store.AccountRecord(u, data))
	}
	if cn.n.push != nil {
		devs, _ := cn.n.push.registry.List()
		for _, d := range devs {
			if data, err := cn.n.push.registry.Export(d.Node); err == nil {
				recs = append(recs, component.RegistrationRecord(d.Node, data))
			}
		}
	}
	if cn.n.sipReg != nil {
		for _, b := range cn.n.sipReg.All() {
			recs = append(recs, sip.BindingRecord(b, false))
		}
	}
	if cn.n.inCalls != nil {
		for _, aor := range cn.n.inCalls.here() {
			recs = append(recs, sip.InCallRecord(aor, true))
		}
	}
	recs = append(recs, cn.switchRecords()...)
	if len(recs) == 0 {
		return
	}
	if err := cn.c.Send(context.Background(), to, recs...)(); err != nil {
		cn.log.Warn("cluster: accounts, push registrations and the push switch not sent to a new member", "node", to, "err", err)
	}
}

// adoptOwned carries out a failover.Adopt: it serves every replicated
// session whose user's primary is now this node and, with FromDisk, every
// device of its own store that no session covers; it returns how many
// sessions it took over.
func (cn *clusterNode) adoptOwned(a failover.Adopt) int {
	self := cn.c.Name()
	place, before := a.Placement, a.Before
	cn.mu.Lock()
	var sessions []router.AdoptedSession
	devices := map[string]bool{}
	for dev, ss := range cn.replicas {
		if place.Primary(userOf(dev)) != self {
			continue
		}
		sessions = append(sessions, ss)
		devices[dev] = true
		delete(cn.replicas, dev)
	}
	cn.mu.Unlock()
	var diskRegs map[string][]jsm.Registration
	if a.FromDisk {
		stale := map[string]bool{}
		for _, u := range a.Stale {
			stale[u] = true
		}
		// This node's own devices nobody handed over, unless another
		// member served their user meanwhile: then they were delivered,
		// logged out of or moved to the offline store there.
		own := func(dev string) bool {
			return !devices[dev] && place.Primary(userOf(dev)) == self && !stale[userOf(dev)]
		}
		diskRegs = map[string][]jsm.Registration{}
		for dev, regs := range cn.disk.Registrations {
			switch {
			case own(dev):
				diskRegs[dev] = regs
			case !devices[dev] && stale[userOf(dev)]:
				cn.forgetRegistrations(dev, regs)
			}
		}
		var drops []func() error
		for dev := range cn.disk.Queues {
			switch {
			case own(dev):
				devices[dev] = true
			case !devices[dev] && stale[userOf(dev)]:
				drops = append(drops, cn.n.queue.DropAsync(dev))
			}
		}
		for _, w := range drops {
			if err := w(); err != nil {
				cn.log.Error("cluster: stale queue not dropped", "err", err)
			}
		}
		for dev := range diskRegs {
			devices[dev] = true
		}
	}
	queues := map[string]jsm.QueueInfo{}
	for dev := range devices {
		// What was replicated or handed over may still be in the group
		// commit.
		cn.n.queue.Settled(dev)
	}
	infos := cn.n.queue.Devices()
	if cn.trimAcked(sessions, infos) {
		infos = cn.n.queue.Devices()
	}
	for _, d := range infos {
		if devices[d.Device] {
			queues[d.Device] = jsm.QueueInfo{First: d.First, Last: d.Last, Count: d.Count, Bytes: d.Bytes}
		}
	}
	// The users this node serves from now on may have offline messages
	// replicated here: jsm learns how many (its bound, M10, and whether a
	// login must fetch them).
	counts, err := cn.n.queue.OfflineCounts()
	if err != nil {
		cn.log.Error("cluster: counting offline messages", "err", err)
	}
	offline := map[string]int{}
	for _, user := range cn.localUsers(func(user string) bool {
		return place.Primary(user) == self && (before == nil || before.Primary(user) != self)
	}) {
		offline[user] = counts[user]
		if err != nil {
			offline[user] = -1 // unknown: the next login asks the store
		}
	}
	if len(devices) == 0 && len(offline) == 0 {
		return 0
	}
	cn.n.router.Adopt(sessions, queues, diskRegs, offline)
	return len(sessions)
}

// forgetRegistrations deletes a device's stale push registrations from
// this node's store.
func (cn *clusterNode) forgetRegistrations(dev string, regs []jsm.Registration) {
	for _, r := range regs {
		if err := cn.n.db.PushRegistrations().Delete(dev, r.AppServer, r.Node); err != nil {
			cn.log.Error("cluster: stale push registration not deleted", "err", err)
		}
	}
}

// trimAcked drops from the adopted queues what each session's client had
// acknowledged: the primary's trim may not have arrived before it died.
// The trims share the group commit; only queues that hold such entries
// are written. It reports whether any was.
func (cn *clusterNode) trimAcked(sessions []router.AdoptedSession, infos []queue.DeviceInfo) bool {
	first := map[string]uint64{}
	for _, d := range infos {
		first[d.Device] = d.First
	}
	var waits []func() error
	for _, ss := range sessions {
		if f, ok := first[ss.Device]; ok && ss.AckedSeq >= f {
			waits = append(waits, cn.n.queue.TrimAsync(ss.Device, ss.AckedSeq))
		}
	}
	for _, w := range waits {
		if err := w(); err != nil {
			cn.log.Error("cluster: trimming an adopted queue", "err", err)
		}
	}
	return len(waits) > 0
}

// --- admin ---

// clusterAdmin answers the admin API's cluster questions.
type clusterAdmin struct{ cn *clusterNode }

func (a clusterAdmin) Status() any {
	users, _ := a.cn.n.db.Accounts().List()
	return a.cn.c.Status(func(yield func(string) bool) {
		for _, u := range users {
			if !yield(u.String()) {
				return
			}
		}
	})
}

func (a clusterAdmin) Where(user string) (string, string, error) {
	j, err := userJID(user, a.cn.n.cfg.Domain)
	if err != nil {
		return "", "", err
	}
	p, b := a.cn.c.Placement().PrimaryBackup(j.String())
	return p, b, nil
}

const clusterUsage = `usage: pushd cluster status [--json] [--config FILE]
       pushd cluster where [--json] [--config FILE] JID
Asks a running node, through its admin endpoint.`

func cmdCluster(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "status" && args[0] != "where") {
		fmt.Fprintln(stderr, clusterUsage)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("cluster "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (TOML)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.token"))
	if err != nil {
		return fmt.Errorf("admin token (is the node running here?): %w", err)
	}
	c := &admin.Client{Addr: cfg.Admin.Listen, Token: strings.TrimSpace(string(tok))}
	if args[0] == "where" {
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, clusterUsage)
			return flag.ErrHelp
		}
		w, err := c.Where(fs.Arg(0))
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(w)
		}
		fmt.Fprintf(stdout, "primary %s\nbackup  %s\n", w.Primary, orNone(w.Backup))
		return nil
	}
	raw, err := c.ClusterStatus()
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := fmt.Fprintf(stdout, "%s\n", raw)
		return err
	}
	var st cluster.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "node %s\n", st.Node)
	for _, m := range st.Members {
		fmt.Fprintf(stdout, "  %-20s %-8s c2s %s\n", m.Name, m.State, m.Meta.C2SAddr)
	}
	if st.Roles != nil {
		fmt.Fprintf(stdout, "roles: %+v\n", *st.Roles)
	}
	for _, l := range st.Replication {
		fmt.Fprintf(stdout, "replication to %+v\n", l)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
