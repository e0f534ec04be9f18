package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"mellium.im/xmpp/jid"

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

// node is one running pushd: everything `pushd serve` starts, assembled
// in start order and stopped in reverse.
type node struct {
	cfg    fileConfig
	log    *slog.Logger
	db     *store.DB
	queue  *queue.Store
	router *router.Server
	admin  *admin.Server
	ready  atomic.Bool
	// push is the in-process push component (nil when no provider is
	// configured) and pushRun keeps its link to the router up.
	push    *pushStack
	pushRun func(ctx context.Context) error
	// cluster is this node's membership (nil: a node alone).
	cluster *clusterNode
	// sip is the SIP registrar and proxy (nil: [sip] listen is empty);
	// sipServer is the same for the cluster's applier goroutines, set once
	// it serves. sipReg, its bindings, opens before the cluster joins so
	// that replicated bindings have somewhere to go.
	sip       *sip.Server
	sipServer atomic.Pointer[sip.Server]
	sipReg    *sip.Registrar
	// inCalls is which users are in a call, through this node or another
	// (M7); it feeds jsm.
	inCalls *inCalls
	// pushSwitch is the cluster's push switch as this node holds it (O2):
	// kept, and copied to peers, whether or not this node pushes.
	pushSwitch *dispatch.Switch
	// tls is the node's TLS configuration (its certificate).
	tls *tls.Config
}

// startNode opens storage, restores the session manager and binds every
// listener; Run then serves.
func startNode(cfg fileConfig, log *slog.Logger) (*node, error) {
	n := &node{cfg: cfg, log: log}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	sync, err := store.ParseSyncPolicy(cfg.Storage.Sync)
	if err != nil {
		return nil, fmt.Errorf("config: storage.sync: %w", err)
	}
	n.db, err = store.Open(store.Config{Dir: filepath.Join(cfg.DataDir, "db"), Domain: cfg.Domain, Sync: sync, Logger: log})
	if err != nil {
		return nil, err
	}
	qcfg := queue.DefaultConfig()
	qcfg.Sync = sync
	qcfg.MaxEntries, qcfg.MaxBytes = cfg.Queue.MaxEntries, cfg.Queue.MaxBytes
	// jsm decides which presence to evict (M9) and tells the queue; the
	// queue's own bound stays as a safety net a little above jsm's.
	qcfg.EvictPresence = false
	qcfg.MaxEntries += qcfg.MaxEntries / 10
	qcfg.MaxBytes += qcfg.MaxBytes / 10
	n.queue, err = queue.New(n.db.Badger(), qcfg)
	if err != nil {
		n.close()
		return nil, err
	}
	if cfg.SIP.Listen != "" {
		if n.sipReg, err = sip.OpenRegistrar(n.db.Badger()); err != nil {
			n.close()
			return nil, err
		}
	}
	state, err := n.db.State()
	if err != nil {
		n.close()
		return nil, err
	}
	state.Queues = make(map[string]jsm.QueueInfo)
	for _, d := range n.queue.Devices() {
		state.Queues[d.Device] = jsm.QueueInfo{First: d.First, Last: d.Last, Count: d.Count, Bytes: d.Bytes}
	}
	jcfg := jsm.DefaultConfig()
	jcfg.Domain = cfg.Domain
	jcfg.ResumeTimeout = time.Duration(cfg.C2S.ResumeTimeout)
	jcfg.PushResumeTimeout = time.Duration(cfg.C2S.PushResumeTimeout)
	jcfg.MobileResourcePrefixes = cfg.C2S.MobileResources
	jcfg.IncludeBody, jcfg.IncludeSender = cfg.PushTriggers.IncludeBody, cfg.PushTriggers.IncludeSender
	jcfg.PushCoalesce = time.Duration(cfg.PushTriggers.Coalesce)
	jcfg.DesktopIdle = time.Duration(cfg.PushTriggers.DesktopIdle)
	jcfg.MaxQueueEntries, jcfg.MaxQueueBytes = cfg.Queue.MaxEntries, cfg.Queue.MaxBytes
	var pushDomain, pushSecret string
	pushOn := cfg.APNS.Topic != "" || cfg.FCM.ProjectID != ""
	if pushOn {
		pushDomain, pushSecret = pushDomainAndSecret(cfg.pushFileConfig, cfg.Domain)
		// pushd's own app server sees sender and body; they leave pushd
		// only inside the device-key ciphertext (BEHAVIOUR S2).
		jcfg.TrustedAppServers = append(jcfg.TrustedAppServers, pushDomain)
	}
	disk := jsm.State{Queues: state.Queues, Registrations: state.Registrations}
	if cfg.Cluster.enabled() {
		// Served after the other members hand over (clusterNode.sync).
		state.Queues, state.Registrations = nil, nil
		// Stanzas for a user still on their way through the router's lane
		// (the user moved) go after them.
		jcfg.Remote = func(user string) bool {
			return n.cluster != nil && (n.router.Forwarding(user) || n.cluster.remote(user))
		}
	}
	machine := jsm.New(jcfg, state)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.pushSwitch, err = dispatch.OpenSwitch(n.db.Badger(), dispatch.SwitchConfig{Node: cfg.Cluster.NodeName, Logger: log, Metrics: reg})
	if err != nil {
		n.close()
		return nil, err
	}
	if st := n.pushSwitch.State(); !st.Enabled {
		// Said at every start: a switch left off is otherwise silent.
		log.Warn("push switch is off: no push is sent until `pushd push enable`", "version", st.Version, "node", st.Node)
	}

	rcfg := router.DefaultConfig()
	rcfg.Metrics = router.NewMetrics(reg)
	rcfg.Domain = cfg.Domain
	rcfg.C2SListen = cfg.C2S.Listen
	rcfg.TLSListen = cfg.C2S.TLSListen
	rcfg.ComponentListen = cfg.Component.Listen
	rcfg.RequireTLS = cfg.C2S.RequireTLS
	rcfg.AllowPlainWithoutTLS = cfg.C2S.AllowPlainWithoutTLS
	rcfg.ResumeTimeout = time.Duration(cfg.C2S.ResumeTimeout)
	rcfg.PushResumeTimeout = time.Duration(cfg.C2S.PushResumeTimeout)
	rcfg.ResumeLocation = cfg.C2S.ResumeLocation
	rcfg.Limits = stanza.Limits{MaxBytes: cfg.C2S.MaxStanzaBytes, MaxDepth: cfg.C2S.MaxDepth}
	rcfg.RateLimit, rcfg.RateBurst = cfg.C2S.RateLimit, cfg.C2S.RateBurst
	rcfg.Logger = log
	rcfg.ComponentSecrets = map[string]string{}
	for _, a := range cfg.Component.Accept {
		rcfg.ComponentSecrets[strings.ToLower(a.Domain)] = a.Secret
	}
	cert, err := loadOrCreateCert(cfg.C2S.CertFile, cfg.C2S.KeyFile, cfg.DataDir, cfg.Domain, log)
	if err != nil {
		n.close()
		return nil, err
	}
	n.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	rcfg.TLS = n.tls
	if pushOn {
		rcfg.ComponentSecrets[pushDomain] = pushSecret
	}
	if cfg.Cluster.enabled() {
		fcfg := failover.DefaultConfig(cfg.Cluster.NodeName)
		fcfg.SyncWait = syncWait
		if cfg.Cluster.sweepDelay > 0 {
			fcfg.SweepDelay = cfg.Cluster.sweepDelay
		}
		n.cluster = newClusterNode(n, disk, fcfg, reg)
		rcfg.Cluster = n.cluster
		rcfg.Redirect = cfg.Cluster.Redirect
		rcfg.RelayKey = relayKey(cfg.Cluster.SecretKey)
	}
	n.router, err = router.New(rcfg, machine, router.Stores{
		Accounts: n.db.Accounts(), Queue: n.queue, Rosters: n.db.Rosters(), PushRegistrations: n.db.PushRegistrations(),
	})
	if err != nil {
		n.close()
		return nil, err
	}
	n.inCalls = newInCalls(n.router.Step)
	if n.cluster != nil {
		n.inCalls.tell = n.cluster.inCallChanged
	}
	if pushOn && n.cluster != nil {
		// Every node's component serves every device (H3): one hash key
		// for the registry across the cluster.
		key := []byte(cfg.Domain)
		if cfg.Cluster.SecretKey != "" {
			key = []byte(cfg.Cluster.SecretKey)
		}
		if err := component.SetRegistryKey(n.db.Badger(), key); err != nil {
			n.close()
			return nil, err
		}
	}
	if pushOn {
		opts := pushOptions{Metrics: reg, Logger: log, Node: reachable(c2sAdvertised(cfg)), Switch: n.pushSwitch}
		n.push, n.pushRun, err = startInProcessPush(cfg.pushFileConfig, n.db, pushDomain, pushSecret,
			n.router.ServeComponentConn, opts)
		if err != nil {
			n.close()
			return nil, err
		}
	}
	if n.cluster != nil {
		cc, err := clusterConfig(cfg, cfg.Admin.Listen, log, reg)
		if err == nil {
			err = n.cluster.join(cc)
		}
		if err == nil && n.push != nil {
			n.push.registry.OnChange(n.cluster.registrationChanged)
		}
		if err == nil {
			n.cluster.sync(len(cfg.Cluster.Join) > 0)
		}
		if err != nil {
			n.cluster.stop()
			n.cluster = nil
			n.close()
			return nil, err
		}
	}
	if err := n.router.Listen(); err != nil {
		n.close()
		return nil, err
	}
	if err := n.startSIP(reg); err != nil {
		n.close()
		return nil, fmt.Errorf("sip: %w", err)
	}

	token, err := adminToken(cfg.DataDir)
	if err != nil {
		n.close()
		return nil, err
	}
	if cfg.Admin.Listen != "" {
		n.admin, err = admin.Listen(admin.Config{
			Listen: cfg.Admin.Listen, Token: token, Ready: n.ready.Load,
			Gatherer: reg, Users: nodeUsers{n}, Sessions: nodeUsers{n}, Cluster: n.clusterAdmin(),
			Bindings: n.adminBindings(), Switch: n.switchAdmin(),
			Devices: pushAdminDevices(n.push), Logger: log,
		})
		if err != nil {
			n.close()
			return nil, err
		}
	}
	return n, nil
}

// Run serves until ctx ends, then stops everything.
func (n *node) Run(ctx context.Context) error {
	errc := make(chan error, 4)
	if n.sip != nil {
		go func() { errc <- n.sip.Serve(ctx) }()
	}
	if n.admin != nil {
		go func() { errc <- n.admin.Serve(ctx) }()
	}
	if n.pushRun != nil {
		go func() { errc <- n.pushRun(ctx) }()
	}
	// The router outlives ctx by the cluster's hand-off: its clients are
	// sent to the nodes that take their users over before it stops.
	routerCtx, stopRouter := context.WithCancel(context.Background())
	defer stopRouter()
	go func() { errc <- n.router.Serve(routerCtx) }()
	n.ready.Store(true)
	n.log.Info("pushd serving", "domain", n.cfg.Domain, "c2s", n.router.Addr("c2s"),
		"component", n.router.Addr("component"), "sip", sipAddrs(n.sip), "admin", n.adminAddr(), "version", version)
	<-ctx.Done()
	n.ready.Store(false)
	if n.cluster != nil {
		n.cluster.handOff()
	}
	stopRouter()
	var first error
	for range cap(errc) - boolToInt(n.admin == nil) - boolToInt(n.pushRun == nil) - boolToInt(n.sip == nil) {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	n.close()
	return first
}

func boolToInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (n *node) adminAddr() string {
	if n.admin == nil {
		return ""
	}
	return n.admin.Addr()
}

func (n *node) close() {
	if n.sip != nil {
		n.sip.Close()
	}
	if n.cluster != nil {
		n.cluster.stop()
	}
	if n.push != nil {
		n.push.close()
	}
	if n.queue != nil {
		_ = n.queue.Close()
	}
	if n.db != nil {
		_ = n.db.Close()
	}
}

// adminToken returns the admin API token kept in the data directory,
// creating it on first start.
func adminToken(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "admin.token")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return tok, nil
}

// nodeUsers lets the admin API change accounts of the running node and
// keeps its session manager in step.
type nodeUsers struct{ n *node }

func (u nodeUsers) AddUser(user, password string) error {
	j, err := userJID(user, u.n.cfg.Domain)
	if err != nil {
		return err
	}
	if err := u.n.db.Accounts().Add(j, password); err != nil {
		return mapStoreErr(err)
	}
	u.n.router.Step(jsm.UserAdded{User: j})
	if u.n.cluster != nil {
		return u.n.cluster.broadcastAccount(j, false)
	}
	return nil
}

func (u nodeUsers) DeleteUser(user string) error {
	j, err := userJID(user, u.n.cfg.Domain)
	if err != nil {
		return err
	}
	if err := u.n.db.Accounts().Delete(j); err != nil {
		return mapStoreErr(err)
	}
	if err := u.n.queue.DropOffline(j.String()); err != nil {
		return err
	}
	u.n.router.Step(jsm.UserDeleted{User: j})
	if u.n.cluster != nil {
		return u.n.cluster.broadcastAccount(j, true)
	}
	return nil
}

func (u nodeUsers) SetPassword(user, password string) error {
	j, err := userJID(user, u.n.cfg.Domain)
	if err != nil {
		return err
	}
	if err := u.n.db.Accounts().SetPassword(j, password); err != nil {
		return mapStoreErr(err)
	}
	if u.n.cluster != nil {
		return u.n.cluster.broadcastAccount(j, false)
	}
	return nil
}

func (u nodeUsers) ListUsers() ([]string, error) { return listUsers(u.n.db) }

func (u nodeUsers) Sessions(user string) ([]admin.Session, error) {
	j, err := userJID(user, u.n.cfg.Domain)
	if err != nil {
		return nil, err
	}
	var out []admin.Session
	for _, d := range u.n.router.Devices(j) {
		out = append(out, admin.Session{JID: d.JID.String(), Kind: d.Kind.String(), Detached: d.Detached, Active: d.Active, Queued: d.Queued})
	}
	return out, nil
}

func listUsers(db *store.DB) ([]string, error) {
	users, err := db.Accounts().List()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(users))
	for i, j := range users {
		out[i] = j.String()
	}
	return out, nil
}

func mapStoreErr(err error) error {
	switch {
	case errors.Is(err, store.ErrUserExists):
		return fmt.Errorf("%w: %v", admin.ErrExists, err)
	case errors.Is(err, store.ErrNoUser):
		return fmt.Errorf("%w: %v", admin.ErrNotFound, err)
	}
	return err
}

// userJID accepts "alice" or "alice@domain" for a user of this node.
func userJID(user, domain string) (jid.JID, error) {
	if !strings.Contains(user, "@") {
		user += "@" + domain
	}
	j, err := jid.Parse(user)
	if err != nil || j.Localpart() == "" || j.Resourcepart() != "" {
		return jid.JID{}, fmt.Errorf("%q is not a user JID", user)
	}
	if !strings.EqualFold(j.Domainpart(), domain) {
		return jid.JID{}, fmt.Errorf("%s is not a user of %s", j.Bare(), domain)
	}
	return j.Bare(), nil
}

// adminBindings is the admin API's view of the SIP bindings (nil: SIP off).
func (n *node) adminBindings() admin.Bindings {
	if n.sipReg == nil {
		return nil
	}
	return registrarBindings{r: n.sipReg, server: n.sipServer.Load}
}

// clusterAdmin is the admin API's view of the cluster, nil alone.
func (n *node) clusterAdmin() admin.Cluster {
	if n.cluster == nil {
		return nil
	}
	return clusterAdmin{n.cluster}
}

// reachable is a listen address as a client may dial it: "" for a
// wildcard host, which names no node.
// c2sAdvertised is where clients reach this node's c2s listener.
func c2sAdvertised(cfg fileConfig) string {
	if a := cfg.Cluster.C2SAdvertise; a != "" {
		return a
	}
	return cfg.C2S.Listen
}

func reachable(listen string) string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
		return ""
	}
	return listen
}
