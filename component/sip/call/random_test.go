package call

// Random events, many seeds: a model kept from the actions alone checks
// what must hold whatever the order of events (each call one final answer
// to the caller unless answered, each pushed device one end push, no
// branch forked twice, nothing left after LateWindow).

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"pushd/component/payload"
)

func TestRandomEvents(t *testing.T) {
	for seed := range uint64(1000) {
		a := runRandom(t, seed)
		if t.Failed() {
			return
		}
		if b := runRandom(t, seed); a != b {
			t.Fatalf("seed %d: two replays differ", seed)
		}
	}
}

// The world: two AORs and their devices. A binding ID is DEVICE#N, so
// that the model knows a binding's device.
var world = map[string][]struct {
	name string
	push bool
}{
	"alice": {{"phoneA", true}, {"tabA", true}, {"deskA", false}},
	"bob":   {{"phoneB", true}, {"deskB", false}},
}

func deviceOf(binding string) string { d, _, _ := strings.Cut(binding, "#"); return d }

// inst is what the model knows of one call (an ID may come back as a new
// call once forgotten).
type inst struct {
	id       ID
	aor      string
	over     bool // the caller got a final response, or it was answered
	answered bool
	hungUp   bool
	answerer string
	endAt    time.Time // final response or hangup: forgotten LateWindow later
	finals   int
	local180 int
	rang     bool
	pushed   map[string]string // device → binding of its call push
	endPush  map[string]int
	failed   map[string]bool // its push failed before the call was over
	failedAt map[string]bool // … at any time
	exempt   map[string]bool // answered or declined itself
	open     map[string]string
	ringing  map[string]bool // its open branch sent a 18x
	forked   map[string]bool
	late     map[string]int
}

func newInst(id ID, aor string) *inst {
	return &inst{id: id, aor: aor, pushed: map[string]string{}, endPush: map[string]int{},
		failed: map[string]bool{}, failedAt: map[string]bool{}, exempt: map[string]bool{},
		open: map[string]string{}, ringing: map[string]bool{}, forked: map[string]bool{}, late: map[string]int{}}
}

type randomRun struct {
	t          *testing.T
	seed       uint64
	r          *rand.Rand
	m          *Machine
	cfg        Config
	now        time.Time
	cur        map[ID]*inst
	all        []*inst
	inCall     map[string]bool // per device, from InCall actions
	log        strings.Builder
	stepDesc   string
	overBefore map[*inst]bool // over when the step began
	forgotten  int            // calls Forgotten reported
}

// admitted is how many calls the machine took: every fresh one.
func (w *randomRun) admitted() int { return len(w.all) }

func runRandom(t *testing.T, seed uint64) string {
	w := &randomRun{t: t, seed: seed, r: rand.New(rand.NewPCG(seed, 7)), cfg: DefaultConfig(),
		now: epoch, cur: map[ID]*inst{}, inCall: map[string]bool{}}
	w.m = New(w.cfg)
	for range 80 {
		w.randomEvent()
		if t.Failed() {
			return ""
		}
	}
	// Let everything end: the BYEs, every offer's NoAnswerAfter, then
	// every LateWindow.
	for _, in := range w.all {
		if in.answered && !in.hungUp {
			w.step(Hangup{Call: in.id})
		}
	}
	w.now = w.now.Add(w.cfg.NoAnswerAfter + time.Second)
	w.step(Tick{})
	w.now = w.now.Add(w.cfg.LateWindow + time.Second)
	w.step(Tick{})
	for _, in := range w.all {
		w.checkEnded(in)
	}
	if c, r, n := w.m.Calls(), w.m.Remembered(), w.m.Next(); c != 0 || r != 0 || !n.IsZero() {
		w.fail("after LateWindow: Calls %d Remembered %d Next %v", c, r, n)
	}
	return w.log.String()
}

func (w *randomRun) fail(format string, args ...any) {
	w.t.Helper()
	w.t.Fatalf("seed %d, %s: %s\n%s", w.seed, w.stepDesc, fmt.Sprintf(format, args...), w.log.String())
}

func (w *randomRun) pick(n int) int { return w.r.IntN(n) }

func (w *randomRun) randomID() ID { return ID(fmt.Sprintf("c%d", w.pick(4))) }

func (w *randomRun) randomAOR() string {
	if w.pick(3) == 0 {
		return "bob"
	}
	return "alice"
}

// branchOf picks, mostly, an open branch of a call the model knows.
func (w *randomRun) branchOf(id ID) string {
	if in := w.cur[id]; in != nil && w.pick(5) > 0 {
		for _, d := range sortedKeys(in.open) {
			if w.pick(2) == 0 {
				return in.open[d]
			}
		}
		for _, d := range sortedKeys(in.pushed) {
			if w.pick(2) == 0 {
				return in.pushed[d]
			}
		}
	}
	devs := world[w.randomAOR()]
	return fmt.Sprintf("%s#%d", devs[w.pick(len(devs))].name, 1+w.pick(2))
}

func (w *randomRun) randomEvent() {
	switch n := w.pick(100); {
	case n < 15:
		aor := w.randomAOR()
		inv := Invite{Call: w.randomID(), AOR: aor}
		for _, d := range world[aor] {
			if w.pick(4) == 0 {
				continue
			}
			for k := range 1 + w.pick(2) {
				b := Binding{ID: fmt.Sprintf("%s#%d", d.name, 1+k), Device: d.name, Push: d.push}
				b.Live = !d.push && w.pick(4) > 0 || d.push && w.pick(3) == 0
				inv.Bindings = append(inv.Bindings, b)
			}
		}
		w.step(inv)
	case n < 35:
		aor := w.randomAOR()
		d := world[aor][w.pick(len(world[aor]))]
		w.step(Registered{AOR: aor, Binding: Binding{ID: fmt.Sprintf("%s#%d", d.name, 1+w.pick(2)),
			Device: d.name, Push: d.push, Live: true}})
	case n < 50:
		id := w.randomID()
		w.step(Provisional{Call: id, Binding: w.branchOf(id), Code: []int{180, 183, 100}[w.pick(3)]})
	case n < 65:
		id := w.randomID()
		codes := []int{200, 200, 486, 480, 404, 302, 503, 603, 408, 600, 487}
		w.step(Final{Call: id, Binding: w.branchOf(id), Code: codes[w.pick(len(codes))]})
	case n < 72:
		w.step(Cancelled{Call: w.randomID()})
	case n < 80:
		id := w.randomID()
		w.step(PushFailed{Call: id, Binding: w.branchOf(id)})
	case n < 85:
		w.step(Hangup{Call: w.randomID()})
	default:
		steps := []time.Duration{0, 100 * time.Millisecond, time.Second, 4 * time.Second, 5 * time.Second,
			8 * time.Second, 13 * time.Second, 30 * time.Second, 90 * time.Second}
		w.now = w.now.Add(steps[w.pick(len(steps))])
		if w.pick(3) > 0 {
			w.step(Tick{})
		}
	}
}

// step feeds ev. Deadlines already due fall first, in a Tick of their
// own, so that the model reads each event against the call as the
// deadlines left it.
func (w *randomRun) step(ev Event) {
	w.t.Helper()
	if _, tick := ev.(Tick); !tick {
		if n := w.m.Next(); !n.IsZero() && !n.After(w.now) {
			w.step(Tick{})
		}
	}
	w.stepDesc = fmt.Sprintf("%v %#v", w.now.Sub(epoch), ev)
	fmt.Fprintf(&w.log, "%s\n", w.stepDesc)

	// What the event must do, by the model.
	w.overBefore = map[*inst]bool{}
	for _, in := range w.cur {
		w.overBefore[in] = in.over
	}
	var want487, want6xx *inst
	fresh := false
	switch e := ev.(type) {
	case Invite:
		old := w.cur[e.Call]
		if old == nil || old.over && !old.endAt.IsZero() && !w.now.Before(old.endAt.Add(w.cfg.LateWindow)) {
			w.cur[e.Call] = newInst(e.Call, e.AOR)
			w.all = append(w.all, w.cur[e.Call])
			fresh = true
		}
	case Provisional:
		if in := w.cur[e.Call]; in != nil && !in.over && in.open[deviceOf(e.Binding)] == e.Binding && e.Code > 100 && e.Code < 200 {
			in.rang, in.ringing[deviceOf(e.Binding)] = true, true
		}
	case Final:
		in := w.cur[e.Call]
		dev := deviceOf(e.Binding)
		if in == nil || in.over || in.open[dev] != e.Binding || e.Code < 200 || e.Code >= 700 {
			break
		}
		delete(in.open, dev)
		switch {
		case e.Code < 300:
			in.answered, in.over, in.answerer, in.exempt[dev] = true, true, dev, true
		case e.Code >= 600:
			in.exempt[dev], want6xx = true, in
		}
	case PushFailed:
		if in := w.cur[e.Call]; in != nil && in.pushed[deviceOf(e.Binding)] == e.Binding {
			in.failedAt[deviceOf(e.Binding)] = true
			if !in.over {
				in.failed[deviceOf(e.Binding)] = true
			}
		}
	case Cancelled:
		if in := w.cur[e.Call]; in != nil && !in.over {
			want487 = in
		}
	case Hangup:
		if in := w.cur[e.Call]; in != nil && in.answered && !in.hungUp {
			in.hungUp, in.endAt = true, w.now
		}
	}

	var codes []int
	acts := w.m.Step(w.now, ev)
	for _, a := range acts {
		fmt.Fprintf(&w.log, "  %#v\n", a)
		codes = append(codes, w.action(ev, a)...)
	}

	if want487 != nil && (want487.finals != 1 || len(codes) == 0 || codes[len(codes)-1] != 487) {
		w.fail("CANCEL without its 487: %v", codes)
	}
	if want6xx != nil && want6xx.finals != 1 {
		w.fail("6xx not relayed")
	}
	if _, ok := ev.(Invite); ok && fresh != (len(acts) > 0) {
		// A new call always says something (a fork, a push, or 480); a
		// known one nothing.
		w.fail("new call %v, %d actions", fresh, len(acts))
	}
	for _, in := range w.cur {
		if in.over && len(in.open) > 0 {
			w.fail("%s is over with branches open: %v", in.id, in.open)
		}
	}
	up := map[string]bool{}
	for _, in := range w.cur {
		if in.answered && !in.hungUp {
			up[in.answerer] = true
		}
	}
	for _, d := range append(sortedKeys(up), sortedKeys(w.inCall)...) {
		if up[d] != w.inCall[d] {
			w.fail("device %s: in a call %v, InCall says %v", d, up[d], w.inCall[d])
		}
	}
	if n := w.m.Next(); !n.IsZero() && !n.After(w.now) {
		w.fail("Next %v is not after now", n.Sub(epoch))
	}
	// The deadline heap says what a look at every call says.
	if n, want := w.m.Next(), scanNext(w.m); !n.Equal(want) {
		w.fail("Next %v, the calls' earliest deadline %v", n.Sub(epoch), want.Sub(epoch))
	}
	for _, id := range w.m.Forgotten() {
		if w.m.Known(id) {
			w.fail("%s forgotten and still known", id)
		}
		w.forgotten++
	}
	if w.forgotten+w.m.Len() != w.admitted() {
		w.fail("%d calls forgotten and %d known of %d", w.forgotten, w.m.Len(), w.admitted())
	}
}

// scanNext is Next the slow way: the earliest deadline of every call.
func scanNext(m *Machine) time.Time {
	var next time.Time
	for _, c := range m.calls {
		if t := c.next(); !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next
}

// action checks one action against the model and applies it; it returns
// the final response codes it carried.
func (w *randomRun) action(ev Event, a Action) []int {
	w.t.Helper()
	var id ID
	switch a := a.(type) {
	case Fork:
		id = a.Call
	case Push:
		id = a.Call
	case CancelBranch:
		id = a.Call
	case Respond:
		id = a.Call
	case LateInvite:
		id = a.Call
	case InCall:
		if w.inCall[a.Device] == a.Up {
			w.fail("InCall %v twice for %s", a.Up, a.Device)
		}
		w.inCall[a.Device] = a.Up
		return nil
	}
	in := w.cur[id]
	if in == nil {
		w.fail("action for a call never invited: %#v", a)
	}
	if w.overBefore[in] {
		if _, ok := a.(LateInvite); !ok {
			w.fail("action for a call that is over: %#v", a)
		}
	}
	switch a := a.(type) {
	case Fork:
		dev := deviceOf(a.Binding)
		if in.open[dev] != "" {
			w.fail("fork of %s while %s is open", a.Binding, in.open[dev])
		}
		in.open[dev], in.forked[dev], in.ringing[dev] = a.Binding, true, false
	case CancelBranch:
		dev := deviceOf(a.Binding)
		if in.open[dev] != a.Binding {
			w.fail("cancel of %s, not open (%q)", a.Binding, in.open[dev])
		}
		if _, reg := ev.(Registered); reg && in.ringing[dev] {
			w.fail("a REGISTER cancelled the ringing branch %s", a.Binding)
		}
		delete(in.open, dev)
	case Push:
		dev := deviceOf(a.Binding)
		if a.Type == payload.TypeCall {
			if inv, ok := ev.(Invite); !ok || inv.Call != id || in.pushed[dev] != "" {
				w.fail("call push %#v outside its Invite, or twice", a)
			}
			in.pushed[dev] = a.Binding
			break
		}
		if in.pushed[dev] != a.Binding || in.failed[dev] || in.exempt[dev] {
			w.fail("end push %#v: pushed %q failed %v exempt %v", a, in.pushed[dev], in.failed[dev], in.exempt[dev])
		}
		if in.endPush[dev]++; in.endPush[dev] > 1 {
			w.fail("second end push %#v", a)
		}
	case Respond:
		if a.Code < 200 {
			if in.local180++; in.local180 > 1 || in.rang || in.finals > 0 {
				w.fail("local 180: count %d, rang %v", in.local180, in.rang)
			}
			return nil
		}
		if in.answered || in.finals > 0 {
			w.fail("final %d for a call answered (%v) or already answered to", a.Code, in.answered)
		}
		in.finals++
		in.over, in.endAt = true, w.now
		return []int{a.Code}
	case LateInvite:
		dev := deviceOf(a.Binding)
		reg, ok := ev.(Registered)
		if !ok || reg.Binding.ID != a.Binding || !in.over || in.pushed[dev] == "" || in.forked[dev] || in.failedAt[dev] {
			w.fail("late invite %#v: over %v pushed %q forked %v failed %v", a, in.over, in.pushed[dev], in.forked[dev], in.failedAt[dev])
		}
		if in.late[dev]++; in.late[dev] > 1 {
			w.fail("second late invite %#v", a)
		}
	}
	return nil
}

func (w *randomRun) checkEnded(in *inst) {
	w.t.Helper()
	w.stepDesc = "end of " + string(in.id)
	switch {
	case in.answered && in.finals != 0, !in.answered && in.finals != 1:
		w.fail("%s: answered %v, %d final responses", in.id, in.answered, in.finals)
	}
	for _, d := range sortedKeys(in.pushed) {
		want := 1
		if in.exempt[d] || in.failed[d] {
			want = 0
		}
		if in.endPush[d] != want {
			w.fail("%s: device %s got %d end pushes, want %d", in.id, d, in.endPush[d], want)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
