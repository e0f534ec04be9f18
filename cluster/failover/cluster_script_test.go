package failover

// Cluster scripts (testdata/cluster) run several machines against one
// another: the harness is the membership layer and the handover the
// callers carry out (cmd/pushd), with a fake clock, so that the races the
// protocol exists for replay the same way every time and every node's view
// can be compared. `go test ./cluster/failover -update` rewrites them.
//
//	nodes N… [key=value…]  machines for N…, started as one cluster (sync, resync, sweep)
//	users U…               the users views and checks cover
//	crash N                N stops: the others lose it
//	pause N / cont N       N hears nothing (the others lose it), then hears again:
//	                       the others see it join and welcome it
//	restart N              a crashed N starts again and joins
//	deliver                the handovers sent so far arrive, in order
//	advance DURATION       every running machine's clock moves, then a Tick
//	views                  who serves each user at every running node
//	check                  settled: no running node holds a user, all name the same
//	                       node for it, and that node runs
//
// A Welcome is a handover: the welcoming node (TakenOver first) sends the
// member a HandoverEnded naming the users it served that move to the
// member. Jobs (resync, sweep) finish at once.

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"pushd/internal/scripttest"
)

func TestClusterScripts(t *testing.T) {
	scripttest.RunDir(t, "testdata/cluster", *update, func(t *testing.T) func(scripttest.Block) []string {
		h := &clusterHarness{start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), nodes: map[string]*scriptNode{}}
		h.now = h.start
		return func(b scripttest.Block) []string { return h.run(t, b) }
	})
}

type scriptNode struct {
	m      *Machine
	up     bool // running and a member as the others see it
	paused bool
}

type message struct {
	to string
	ev Event
}

type clusterHarness struct {
	start, now time.Time
	cfg        map[string]time.Duration
	order      []string
	nodes      map[string]*scriptNode
	users      []string
	pending    []message
	out        []string
}

// members lists the nodes the others take for live.
func (h *clusterHarness) members() []string {
	var m []string
	for _, n := range h.order {
		if h.nodes[n].up {
			m = append(m, n)
		}
	}
	return m
}

func (h *clusterHarness) machine(name string) *Machine {
	cfg := DefaultConfig(name)
	for k, d := range h.cfg {
		setting(&cfg, k, d)
	}
	return New(cfg)
}

// step feeds ev to node name and carries out what it asks.
func (h *clusterHarness) step(name string, ev Event) {
	n := h.nodes[name]
	if n == nil || n.paused || n.m == nil {
		return
	}
	before := n.m.View()
	for _, a := range n.m.Step(h.now, ev) {
		h.out = append(h.out, name+": "+show(a))
		switch a := a.(type) {
		case StartResync, StartSweep:
			defer h.step(name, JobDone{})
		case Welcome:
			var served []string
			if a.Before != nil {
				for _, u := range h.users {
					if before.Serving(u) == name && n.m.place.Primary(u) == a.Member {
						served = append(served, u)
					}
				}
			}
			if a.TakenOver {
				h.pending = append(h.pending, message{a.Member, DeclaredDead{}})
			}
			h.pending = append(h.pending, message{a.Member, HandoverEnded{From: name, Served: served}})
		}
	}
}

// join starts name and has it and the members learn of one another, as
// memberlist tells a joining node of every member it finds.
func (h *clusterHarness) join(name string, joining bool, others func(string, func([]string) Event)) {
	h.nodes[name].up = true
	h.step(name, Started{Members: h.members(), Joining: joining})
	for _, o := range h.members() {
		if o != name {
			h.step(name, MemberJoined{Name: o, Members: h.members()})
		}
	}
	others(name, func(m []string) Event { return MemberJoined{Name: name, Members: m} })
}

func (h *clusterHarness) run(t *testing.T, b scripttest.Block) []string {
	t.Helper()
	f := b.Fields()
	fail := func(format string, args ...any) []string {
		t.Fatalf("line %d: %s", b.Line, fmt.Sprintf(format, args...))
		return nil
	}
	h.out = nil
	others := func(name string, ev func([]string) Event) {
		for _, o := range h.members() {
			if o != name {
				h.step(o, ev(h.members()))
			}
		}
	}
	switch f[0] {
	case "nodes":
		h.cfg = map[string]time.Duration{}
		for _, a := range f[1:] {
			if k, v, ok := strings.Cut(a, "="); ok {
				d, err := time.ParseDuration(v)
				if err != nil {
					return fail("%s: %v", a, err)
				}
				if c := DefaultConfig(a); !setting(&c, k, d) {
					return fail("unknown setting %s", k)
				}
				h.cfg[k] = d
				continue
			}
			h.order = append(h.order, a)
			h.nodes[a] = &scriptNode{m: h.machine(a)}
		}
		// As a cluster forms: the first starts alone, each next one joins
		// the ones before it.
		for i, n := range h.order {
			h.join(n, i > 0, others)
		}
	case "users":
		h.users = f[1:]
		return []string{"ok"}
	case "crash", "pause":
		n := h.nodes[f[1]]
		if n == nil || !n.up {
			return fail("%s is not up", f[1])
		}
		n.up = false
		if f[0] == "crash" {
			n.m = nil
		} else {
			n.paused = true
		}
		others(f[1], func(m []string) Event { return MemberLost{Name: f[1], Members: m} })
	case "cont":
		n := h.nodes[f[1]]
		if n == nil || !n.paused {
			return fail("%s is not paused", f[1])
		}
		n.paused, n.up = false, true
		others(f[1], func(m []string) Event { return MemberJoined{Name: f[1], Members: m} })
	case "restart":
		n := h.nodes[f[1]]
		if n == nil || n.m != nil {
			return fail("%s has not crashed", f[1])
		}
		n.m = h.machine(f[1])
		h.join(f[1], true, others)
	case "deliver":
		for len(h.pending) > 0 {
			msg := h.pending[0]
			h.pending = h.pending[1:]
			h.step(msg.to, msg.ev)
		}
	case "advance":
		d, err := time.ParseDuration(f[1])
		if err != nil {
			return fail("%v", err)
		}
		h.now = h.now.Add(d)
		for _, n := range h.order {
			h.step(n, Tick{})
		}
	case "views", "check":
		var lines []string
		for _, u := range h.users {
			line := u
			seen := map[string]bool{}
			for _, n := range h.order {
				node := h.nodes[n]
				if node.m == nil || node.paused {
					continue
				}
				s := node.m.View().Serving(u)
				if s == "" {
					s = "held"
				} else {
					seen[s] = true
				}
				line += " " + n + ":" + s
			}
			if f[0] == "check" {
				// Settled: nobody holds the user any more, all name one
				// node, and that node runs.
				var who []string
				for s := range seen {
					who = append(who, s)
				}
				slices.Sort(who)
				if strings.Contains(line, ":held") || len(who) != 1 || !h.nodes[who[0]].up || h.nodes[who[0]].paused {
					t.Errorf("line %d: not settled: %s", b.Line, line)
				}
				continue
			}
			lines = append(lines, line)
		}
		if f[0] == "check" {
			return []string{"ok"}
		}
		return lines
	default:
		return fail("unknown command %q", f[0])
	}
	if len(h.out) == 0 {
		return []string{"ok"}
	}
	return h.out
}
