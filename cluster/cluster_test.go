package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// eventLog is a MembershipListener that records what it hears.
type eventLog struct {
	mu     sync.Mutex
	events []string
	failed map[string]time.Time
}

func (e *eventLog) add(kind string, m Member) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, kind+" "+m.Name+" "+m.State.String())
	if kind == "failed" {
		if e.failed == nil {
			e.failed = map[string]time.Time{}
		}
		e.failed[m.Name] = time.Now()
	}
}
func (e *eventLog) NodeJoined(m Member)  { e.add("joined", m) }
func (e *eventLog) NodeLeft(m Member)    { e.add("left", m) }
func (e *eventLog) NodeFailed(m Member)  { e.add("failed", m) }
func (e *eventLog) NodeUpdated(m Member) { e.add("updated", m) }

func (e *eventLog) failedAt(name string) (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.failed[name]
	return t, ok
}

type testNode struct {
	c   *Cluster
	ev  *eventLog
	app *memApplier
}

func startNodes(t *testing.T, n int) []*testNode {
	t.Helper()
	var nodes []*testNode
	key := []byte("0123456789abcdef")
	for i := 0; i < n; i++ {
		cfg := DefaultConfig()
		cfg.NodeName = fmt.Sprintf("n%d", i)
		cfg.BindAddr = "127.0.0.1"
		cfg.BindPort = 0
		cfg.ReplicationPort = 0
		cfg.SecretKey = key
		cfg.Logger = quietLogger()
		cfg.Meta.C2SAddr = fmt.Sprintf("127.0.0.1:%d", 15222+i)
		if i > 0 {
			cfg.Join = []string{nodes[0].c.GossipAddr()}
		}
		tn := &testNode{ev: &eventLog{}, app: newMemApplier()}
		c, err := New(cfg, Delegates{Membership: tn.ev, Applier: tn.app})
		if err != nil {
			t.Fatal(err)
		}
		tn.c = c
		nodes = append(nodes, tn)
	}
	t.Cleanup(func() {
		for _, tn := range nodes {
			tn.c.Shutdown()
		}
	})
	return nodes
}

func waitFor(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func liveNames(c *Cluster) []string {
	var out []string
	for _, m := range c.Members() {
		if m.State.Live() {
			out = append(out, m.Name)
		}
	}
	return out
}

func TestClusterJoinPlaceFailDetect(t *testing.T) {
	if testing.Short() {
		t.Skip("memberlist timing test")
	}
	nodes := startNodes(t, 3)
	all := []string{"n0", "n1", "n2"}
	for _, tn := range nodes {
		waitFor(t, tn.c.Name()+" sees 3 members", 10*time.Second, func() bool {
			return slices.Equal(liveNames(tn.c), all) && slices.Equal(tn.c.Placement().Nodes(), all)
		})
	}
	// Metadata arrives with membership.
	if m, _ := nodes[0].c.Member("n2"); m.Meta.C2SAddr != "127.0.0.1:15224" || m.Meta.ClusterAddr == "" || m.Meta.Started == 0 {
		t.Fatalf("n0's view of n2: %+v", m)
	}
	// Every node places every user alike.
	us := users(2000)
	for _, u := range us {
		p0, b0 := nodes[0].c.Placement().PrimaryBackup(u)
		for _, tn := range nodes[1:] {
			if p, b := tn.c.Placement().PrimaryBackup(u); p != p0 || b != b0 {
				t.Fatalf("%s: %s says %s/%s, n0 says %s/%s", u, tn.c.Name(), p, b, p0, b0)
			}
		}
	}

	// Replication between real members, over the TCP transport resolved
	// through NodeMeta.ClusterAddr.
	ctx := context.Background()
	if err := nodes[0].c.Send(ctx, "n1", appendRec("dev", 1))(); err != nil {
		t.Fatalf("replicate n0 → n1: %v", err)
	}
	if err := nodes[0].c.Broadcast(ctx, accountRec("a@x", []byte("k")))(); err != nil {
		t.Fatalf("broadcast: %v", err)
	}
	for _, tn := range nodes[1:] {
		tn.app.mu.Lock()
		_, ok := tn.app.accounts["a@x"]
		tn.app.mu.Unlock()
		if !ok {
			t.Errorf("%s has no account after broadcast", tn.c.Name())
		}
	}

	// Status, as `pushd cluster status --json` shows it.
	st := nodes[0].c.Status(slices.Values(us))
	js, _ := json.MarshalIndent(st, "", "  ")
	t.Logf("status of n0:\n%s", js)
	if st.Roles == nil || st.Roles.Users != len(us) || st.Roles.Primary == 0 || st.Roles.Backup == 0 {
		t.Errorf("roles %+v", st.Roles)
	}

	// Crash n2: Shutdown without Leave.
	killed := time.Now()
	nodes[2].c.Shutdown()
	for _, tn := range nodes[:2] {
		waitFor(t, tn.c.Name()+" declares n2 dead", 30*time.Second, func() bool {
			m, _ := tn.c.Member("n2")
			return m.State == StateDead
		})
	}
	for _, tn := range nodes[:2] {
		at, ok := tn.ev.failedAt("n2")
		if !ok {
			waitFor(t, "NodeFailed event", 5*time.Second, func() bool { _, ok := tn.ev.failedAt("n2"); return ok })
			at, _ = tn.ev.failedAt("n2")
		}
		t.Logf("%s: n2 declared dead %v after the crash", tn.c.Name(), at.Sub(killed).Round(time.Millisecond))
		if got := tn.c.Placement().Nodes(); !slices.Equal(got, []string{"n0", "n1"}) {
			t.Errorf("%s placement after the crash: %v", tn.c.Name(), got)
		}
		tn.ev.mu.Lock()
		sawSuspect := slices.Contains(tn.ev.events, "updated n2 suspect")
		tn.ev.mu.Unlock()
		t.Logf("%s saw n2 suspect before dead: %v", tn.c.Name(), sawSuspect)
	}
	// With no live backup for n0's users other than n1, a send to the dead
	// node is refused fast as degraded.
	if err := nodes[0].c.Send(ctx, "n2", appendRec("dev", 2))(); !errors.Is(err, ErrPeerGone) {
		t.Errorf("send to a dead member: %v, want ErrPeerGone", err)
	}
}

func TestClusterLeaveIsLeft(t *testing.T) {
	if testing.Short() {
		t.Skip("memberlist timing test")
	}
	nodes := startNodes(t, 3)
	for _, tn := range nodes {
		waitFor(t, "3 members", 10*time.Second, func() bool { return len(liveNames(tn.c)) == 3 })
	}
	start := time.Now()
	if err := nodes[1].c.Leave(); err != nil {
		t.Fatal(err)
	}
	nodes[1].c.Shutdown()
	for _, tn := range []*testNode{nodes[0], nodes[2]} {
		waitFor(t, "n1 left", 10*time.Second, func() bool {
			m, _ := tn.c.Member("n1")
			return m.State == StateLeft
		})
	}
	t.Logf("graceful leave seen as left after %v", time.Since(start).Round(time.Millisecond))
}

// TestDetectionTime repeats the crash several times and reports the
// spread; not asserted (timing on a shared machine), only logged.
func TestDetectionTime(t *testing.T) {
	if testing.Short() {
		t.Skip("memberlist timing test")
	}
	var ds []time.Duration
	for round := 0; round < 5; round++ {
		nodes := startNodes(t, 3)
		for _, tn := range nodes {
			waitFor(t, "3 members", 10*time.Second, func() bool { return len(liveNames(tn.c)) == 3 })
		}
		time.Sleep(300 * time.Millisecond)
		killed := time.Now()
		nodes[2].c.Shutdown()
		for _, tn := range nodes[:2] {
			waitFor(t, "dead", 30*time.Second, func() bool { _, ok := tn.ev.failedAt("n2"); return ok })
			at, _ := tn.ev.failedAt("n2")
			ds = append(ds, at.Sub(killed))
		}
		for _, tn := range nodes[:2] {
			tn.c.Shutdown()
		}
	}
	slices.Sort(ds)
	t.Logf("crash → declared dead, 3 nodes, %d observations: min %v median %v max %v", len(ds),
		ds[0].Round(time.Millisecond), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
}
