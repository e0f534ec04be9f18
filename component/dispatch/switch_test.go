package dispatch_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pushd/component/dispatch"
)

// O2, the push switch, at the dispatcher: while it is off no push reaches
// a provider, whether submitted then or accepted before and still queued;
// each producer hears "disabled" (not a dead token: no registration is
// touched); once it is on again new pushes go, and nothing held back is
// sent late.
func TestPushSwitchGate(t *testing.T) {
	db := openDB(t, "")
	defer db.Close()
	reg := prometheus.NewRegistry()
	sw, err := dispatch.OpenSwitch(db, dispatch.SwitchConfig{Node: "n1", Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var sent []string
	release := make(chan struct{})
	inSend := make(chan struct{}, 1)
	prov := fnProvider(func(ctx context.Context, p dispatch.Push) dispatch.Outcome {
		mu.Lock()
		sent = append(sent, p.TrackingID)
		first := len(sent) == 1
		mu.Unlock()
		if first {
			inSend <- struct{}{}
			<-release
		}
		return dispatch.Outcome{Result: dispatch.Delivered, Status: 200}
	})
	e := startGated(t, db, map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: prov},
		func(c *dispatch.Config) { c.Workers = 1; c.CoalesceWindow = 0 }, sw)
	defer e.d.Close()
	f := newFinals()
	submit := func(job dispatch.Job) string {
		t.Helper()
		job.Done = f.done
		tid, err := e.d.Submit(context.Background(), job)
		if err != nil {
			t.Fatalf("Submit while the switch is %v: %v", sw.Enabled(), err)
		}
		return tid
	}
	gauge := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "pushd_push_enabled" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	if !sw.Enabled() || gauge() != 1 {
		t.Fatalf("a switch never set: enabled %v, gauge %v; want on", sw.Enabled(), gauge())
	}

	// inFlight is with the provider when the switch goes off; queued waits
	// behind it on the one worker.
	inFlight := submit(msgJob(""))
	<-inSend
	queued := submit(callJob("cd"))
	if _, err := sw.Set(false); err != nil {
		t.Fatal(err)
	}
	if gauge() != 0 {
		t.Fatalf("gauge %v while off", gauge())
	}
	offMsg, offCall := submit(msgJob("")), submit(callJob("cd"))
	close(release)
	got := map[string]dispatch.Final{}
	for range 4 {
		fin := f.next(t)
		got[fin.TrackingID] = fin
	}
	if !got[inFlight].Delivered() {
		t.Errorf("the push already with the provider: %+v, want delivered", got[inFlight])
	}
	for name, tid := range map[string]string{"queued before": queued, "message while off": offMsg, "call while off": offCall} {
		if fin := got[tid]; !fin.Disabled() || fin.Delivered() || fin.Outcome != "disabled" {
			t.Errorf("%s: Done heard %+v, want disabled", name, fin)
		}
	}
	e.waitIdle(t)
	if dead := e.hook.got(); len(dead) != 0 {
		t.Errorf("dead-token hook told %+v: the switch must keep registrations", dead)
	}
	if n := counter(e.reg, "pushd_pushes_suppressed_total", "provider", "apns"); n != 3 {
		t.Errorf("pushd_pushes_suppressed_total = %v, want 3", n)
	}
	if n := counter(e.reg, "pushd_pushes_suppressed_total", "kind", "call"); n != 2 {
		t.Errorf("suppressed calls = %v, want 2", n)
	}

	if _, err := sw.Set(true); err != nil {
		t.Fatal(err)
	}
	after := submit(msgJob(""))
	if fin := f.next(t); fin.TrackingID != after || !fin.Delivered() {
		t.Fatalf("after the switch is on again: %+v, want %s delivered", fin, after)
	}
	e.waitIdle(t)
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 2 || sent[0] != inFlight || sent[1] != after {
		t.Fatalf("provider got %v, want only %s then %s: nothing held back is sent late", sent, inFlight, after)
	}
}

// O2: the switch survives a restart of the node (it is in its database),
// and of two states the newest wins, ties going to the greater node name,
// so members that flipped it at once agree after exchanging records.
func TestPushSwitchStateAndRecord(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	clk := newClock()
	sw, err := dispatch.OpenSwitch(db, dispatch.SwitchConfig{Node: "n2", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	off, err := sw.Set(false)
	if err != nil {
		t.Fatal(err)
	}
	if off.Enabled || off.Node != "n2" || off.Version != uint64(clk.Now().UnixMilli()) {
		t.Fatalf("Set(false) = %+v", off)
	}
	// A second change in the same millisecond still gets a newer version.
	again, _ := sw.Set(false)
	if again.Version != off.Version+1 {
		t.Fatalf("second version %d, want %d", again.Version, off.Version+1)
	}
	db.Close()

	db = openDB(t, dir)
	defer db.Close()
	sw, err = dispatch.OpenSwitch(db, dispatch.SwitchConfig{Node: "n2", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if st := sw.State(); sw.Enabled() || st.Version != again.Version || !st.Changed.Equal(again.Changed) {
		t.Fatalf("after restart: %+v enabled %v, want %+v", st, sw.Enabled(), again)
	}

	rec := dispatch.SwitchRecord(dispatch.SwitchState{Enabled: true, Version: again.Version, Node: "n1", Changed: clk.Now()})
	st, err := dispatch.DecodeSwitchRecord(rec)
	if err != nil || st.Node != "n1" || !st.Enabled || !st.Changed.Equal(clk.Now()) {
		t.Fatalf("record round trip: %+v, %v", st, err)
	}
	for _, c := range []struct {
		name  string
		st    dispatch.SwitchState
		newer bool
	}{
		{"older", dispatch.SwitchState{Enabled: true, Version: again.Version - 1, Node: "n9"}, false},
		{"same version, smaller node", st, false},
		{"the same", again, false},
		{"same version, greater node", dispatch.SwitchState{Enabled: true, Version: again.Version, Node: "n3"}, true},
		{"newer", dispatch.SwitchState{Enabled: false, Version: again.Version + 5, Node: "n1", Changed: clk.Now().Add(time.Second)}, true},
	} {
		before := sw.State()
		newer, err := sw.Apply(c.st, "peer")
		if err != nil || newer != c.newer {
			t.Fatalf("%s: Apply = %v, %v; want %v", c.name, newer, err, c.newer)
		}
		want := before
		if c.newer {
			want = c.st
		}
		if got := sw.State(); got.Version != want.Version || got.Node != want.Node || got.Enabled != sw.Enabled() || got.Enabled != want.Enabled {
			t.Fatalf("%s: state %+v, want %+v", c.name, got, want)
		}
	}
	// The local clock behind the cluster's: the next change still wins.
	next, _ := sw.Set(true)
	if next.Version <= again.Version+5 {
		t.Fatalf("a change after a newer peer's: version %d, want above %d", next.Version, again.Version+5)
	}
}
