package failover

// Data-driven scripts (internal/scripttest) replay the failover protocol's
// races on one node with a fake clock. `go test ./cluster/failover
// -update` rewrites the expected output; read the diff.
//
//	init SELF [key=value…]   a machine for SELF (sync, resync, sweep: durations)
//	start MEMBER… [joining]  Started with these live members
//	join NAME / lose NAME    MemberJoined / MemberLost (the harness keeps the member list)
//	dead                     DeclaredDead
//	handover FROM [USER…]    HandoverEnded, naming the users FROM served meanwhile
//	dropped PEER             Dropped
//	done                     JobDone
//	advance DURATION         the clock moves, then a Tick
//	view USER…               who serves each user, as routing sees it
//	next                     when the machine wants its next Tick

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"pushd/cluster"
	"pushd/internal/scripttest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt with the actual output")

func TestScripts(t *testing.T) {
	scripttest.RunDir(t, "testdata", *update, func(t *testing.T) func(scripttest.Block) []string {
		h := &harness{start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		h.now = h.start
		return func(b scripttest.Block) []string { return h.run(t, b) }
	})
}

type harness struct {
	m          *Machine
	start, now time.Time
	members    []string
}

func (h *harness) run(t *testing.T, b scripttest.Block) []string {
	t.Helper()
	f := b.Fields()
	fail := func(format string, args ...any) []string {
		t.Fatalf("line %d: %s", b.Line, fmt.Sprintf(format, args...))
		return nil
	}
	if f[0] != "init" && h.m == nil {
		return fail("init first")
	}
	var ev Event
	switch f[0] {
	case "init":
		cfg := DefaultConfig(f[1])
		for _, kv := range f[2:] {
			k, v, _ := strings.Cut(kv, "=")
			d, err := time.ParseDuration(v)
			if err != nil {
				return fail("%s: %v", kv, err)
			}
			if !setting(&cfg, k, d) {
				return fail("unknown setting %s", k)
			}
		}
		h.m = New(cfg)
		return nil
	case "start":
		joining := slices.Contains(f, "joining")
		h.members = slices.DeleteFunc(slices.Clone(f[1:]), func(s string) bool { return s == "joining" })
		ev = Started{Members: h.members, Joining: joining}
	case "join":
		h.members = append(h.members, f[1])
		ev = MemberJoined{Name: f[1], Members: slices.Clone(h.members)}
	case "lose":
		h.members = slices.DeleteFunc(h.members, func(s string) bool { return s == f[1] })
		ev = MemberLost{Name: f[1], Members: slices.Clone(h.members)}
	case "dead":
		ev = DeclaredDead{}
	case "handover":
		ev = HandoverEnded{From: f[1], Served: f[2:]}
	case "dropped":
		ev = Dropped{Peer: f[1]}
	case "done":
		ev = JobDone{}
	case "advance":
		d, err := time.ParseDuration(f[1])
		if err != nil {
			return fail("%v", err)
		}
		h.now = h.now.Add(d)
		ev = Tick{}
	case "view":
		v := h.m.View()
		var out []string
		if v.Syncing {
			out = append(out, "syncing")
		}
		for _, u := range f[1:] {
			s := v.Serving(u)
			if s == "" {
				s = "(held: takeover or sync under way)"
			}
			out = append(out, u+" "+s)
		}
		return out
	case "next":
		n := h.m.Next()
		if n.IsZero() {
			return []string{"none"}
		}
		return []string{"at " + n.Sub(h.start).String()}
	default:
		return fail("unknown command %q", f[0])
	}
	var out []string
	for _, a := range h.m.Step(h.now, ev) {
		out = append(out, show(a))
	}
	return out
}

// setting applies a script's key=duration to cfg: sync, resync, sweep.
func setting(cfg *Config, k string, d time.Duration) bool {
	switch k {
	case "sync":
		cfg.SyncWait = d
	case "resync":
		cfg.ResyncDelay = d
	case "sweep":
		cfg.SweepDelay = d
	default:
		return false
	}
	return true
}

func show(a Action) string {
	switch a := a.(type) {
	case Adopt:
		s := "adopt " + nodes(a.Placement) + " before " + nodes(a.Before)
		if a.FromDisk {
			s += " from-disk"
		}
		if len(a.Stale) > 0 {
			s += " stale " + strings.Join(a.Stale, ",")
		}
		return s
	case Forget:
		return "forget " + nodes(a.Placement)
	case Welcome:
		s := "welcome " + a.Member + " before " + nodes(a.Before)
		if a.TakenOver {
			s += " taken-over"
		}
		return s
	case StartResync:
		return fmt.Sprintf("resync (%s) %s", a.Why, pick(a.Pick))
	case StartSweep:
		return "sweep"
	}
	return fmt.Sprintf("%T", a)
}

func nodes(p *cluster.Placement) string {
	if p == nil {
		return "-"
	}
	return "[" + strings.Join(p.Nodes(), " ") + "]"
}

func pick(p Pick) string {
	if p.All {
		return "all"
	}
	var parts []string
	if len(p.BackupIs) > 0 {
		parts = append(parts, "backup="+strings.Join(p.BackupIs, ","))
	}
	for _, l := range p.Lost {
		parts = append(parts, "lost="+l.Node+"@"+nodes(l.Was))
	}
	return strings.Join(parts, " ")
}
