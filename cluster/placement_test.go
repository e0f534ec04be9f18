package cluster

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

func users(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("user%d@example.org", i)
	}
	return out
}

func nodeNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%02d", i)
	}
	return out
}

func TestPlacementDeterministicAndOrderFree(t *testing.T) {
	a := NewPlacement([]string{"c", "a", "b", "a", ""})
	b := NewPlacement([]string{"b", "c", "a"})
	if got := a.Nodes(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("nodes %v", got)
	}
	for _, u := range users(1000) {
		p1, b1 := a.PrimaryBackup(u)
		p2, b2 := b.PrimaryBackup(u)
		if p1 != p2 || b1 != b2 {
			t.Fatalf("%s: %s/%s vs %s/%s", u, p1, b1, p2, b2)
		}
		if p1 == b1 {
			t.Fatalf("%s: backup is the primary %s", u, p1)
		}
	}
}

func TestPlacementSmall(t *testing.T) {
	if p, b := NewPlacement(nil).PrimaryBackup("u"); p != "" || b != "" {
		t.Fatalf("empty: %q %q", p, b)
	}
	if p, b := NewPlacement([]string{"solo"}).PrimaryBackup("u"); p != "solo" || b != "" {
		t.Fatalf("one node: %q %q", p, b)
	}
	p, b := NewPlacement([]string{"x", "y"}).PrimaryBackup("u")
	if p == b || p == "" || b == "" {
		t.Fatalf("two nodes: %q %q", p, b)
	}
}

func TestPlacementBalance(t *testing.T) {
	const nUsers = 10000
	for _, n := range []int{3, 10} {
		p := NewPlacement(nodeNames(n))
		prim := map[string]int{}
		back := map[string]int{}
		for _, u := range users(nUsers) {
			pr, bk := p.PrimaryBackup(u)
			prim[pr]++
			back[bk]++
		}
		want := float64(nUsers) / float64(n)
		for _, name := range p.Nodes() {
			for what, m := range map[string]map[string]int{"primary": prim, "backup": back} {
				if dev := math.Abs(float64(m[name])-want) / want; dev > 0.15 {
					t.Errorf("N=%d %s %s has %d users, want about %.0f", n, name, what, m[name], want)
				}
			}
		}
	}
}

// A join moves about 1/(N+1) of the primaries, all to the new node; a
// leave changes only the users whose primary or backup was the leaver.
func TestPlacementMovesOnlyTheShare(t *testing.T) {
	us := users(10000)
	for _, n := range []int{3, 10} {
		names := nodeNames(n)
		before := NewPlacement(names)
		after := NewPlacement(append(slices.Clone(names), "newcomer"))
		moved, backupsChanged := 0, 0
		for _, u := range us {
			p1, b1 := before.PrimaryBackup(u)
			p2, b2 := after.PrimaryBackup(u)
			if p1 != p2 {
				moved++
				if p2 != "newcomer" {
					t.Fatalf("join: %s moved %s → %s, not to the newcomer", u, p1, p2)
				}
			}
			if b1 != b2 {
				backupsChanged++
				if b2 != "newcomer" && p2 != "newcomer" {
					t.Fatalf("join: %s backup %s → %s without the newcomer", u, b1, b2)
				}
			}
		}
		frac := float64(moved) / float64(len(us))
		want := 1 / float64(n+1)
		t.Logf("N=%d → %d: join moved %d primaries (%.3f, ideal %.3f), %d backups changed", n, n+1, moved, frac, want, backupsChanged)
		if math.Abs(frac-want) > 0.3*want {
			t.Errorf("join moved %.3f of primaries, want about %.3f", frac, want)
		}

		// Leave: node-00 goes.
		leaver := names[0]
		gone := NewPlacement(names[1:])
		changed := 0
		for _, u := range us {
			p1, b1 := before.PrimaryBackup(u)
			p2, b2 := gone.PrimaryBackup(u)
			if p1 != leaver && b1 != leaver {
				if p1 != p2 || b1 != b2 {
					t.Fatalf("leave: %s (%s/%s) changed to %s/%s though %s held neither role", u, p1, b1, p2, b2, leaver)
				}
				continue
			}
			changed++
			if p1 == leaver && p2 != b1 {
				t.Fatalf("leave: %s primary %s should fail over to its backup %s, got %s", u, p1, b1, p2)
			}
			if b1 == leaver && p2 != p1 {
				t.Fatalf("leave: %s lost its backup but its primary changed %s → %s", u, p1, p2)
			}
		}
		t.Logf("N=%d → %d: leave changed %d users (%.3f, ideal 2/N = %.3f)", n, n-1, changed, float64(changed)/float64(len(us)), 2/float64(n))
	}
}

func BenchmarkPlacement(b *testing.B) {
	us := users(4096)
	for _, n := range []int{3, 10, 100} {
		p := NewPlacement(nodeNames(n))
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p.PrimaryBackup(us[i&4095])
				i++
			}
		})
	}
}
