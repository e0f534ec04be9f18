package call

// Data-driven scripts (internal/scripttest) replay held calls with a fake
// clock: what the INVITE, the branches' responses, the pushed phones'
// REGISTERs and time passing make the proxy do. `go test
// ./component/sip/call -update` rewrites the expected output; read the
// diff.
//
//	init [ring=D] [giveup=D] [noanswer=D] [late=D]   a machine (durations)
//	invite CALL AOR            Invite; one input line per binding: ID DEVICE [push] [live]
//	register AOR ID DEVICE [push] [live]   Registered
//	ring CALL BINDING [CODE]   Provisional (180 unless CODE)
//	final CALL BINDING CODE    Final
//	cancel CALL / hangup CALL  Cancelled / Hangup
//	pushfailed CALL BINDING    PushFailed
//	tick +D                    the clock moves by D, then a Tick
//	wait +D                    the clock moves by D, no Tick: the next event is late
//	next                       when the machine wants its next Tick, since the start
//	calls                      Calls and Remembered
//	incall AOR                 InCall(AOR)
//
// Output, one action a line: fork CALL BINDING, push CALL BINDING TYPE,
// cancel-branch CALL BINDING [cause=N], respond CALL CODE [from BINDING],
// late-invite CALL BINDING [cause=N], in-call AOR DEVICE up|down.

import (
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"pushd/internal/scripttest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt with the actual output")

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestScripts(t *testing.T) {
	scripttest.RunDir(t, "testdata", *update, func(t *testing.T) func(scripttest.Block) []string {
		h := &harness{now: epoch}
		return func(b scripttest.Block) []string { return h.run(t, b) }
	})
}

type harness struct {
	m   *Machine
	now time.Time
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
	need := func(n int) bool {
		if len(f) < n+1 {
			fail("%s wants %d arguments", f[0], n)
			return false
		}
		return true
	}
	code := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			fail("code %q: %v", s, err)
		}
		return n
	}
	var ev Event
	switch f[0] {
	case "init":
		var cfg Config
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			d, err := time.ParseDuration(v)
			if err != nil {
				return fail("%s: %v", kv, err)
			}
			switch k {
			case "ring":
				cfg.RingAfter = d
			case "giveup":
				cfg.GiveUpAfter = d
			case "noanswer":
				cfg.NoAnswerAfter = d
			case "late":
				cfg.LateWindow = d
			default:
				return fail("unknown setting %s", k)
			}
		}
		h.m = New(cfg)
		return nil
	case "invite":
		if !need(2) {
			return nil
		}
		inv := Invite{Call: ID(f[1]), AOR: f[2]}
		for _, l := range b.Input {
			bf := strings.Fields(l)
			if len(bf) < 2 {
				return fail("binding %q: ID DEVICE [push] [live]", l)
			}
			inv.Bindings = append(inv.Bindings, binding(bf))
		}
		ev = inv
	case "register":
		if !need(3) {
			return nil
		}
		ev = Registered{AOR: f[1], Binding: binding(f[2:])}
	case "ring":
		if !need(2) {
			return nil
		}
		c := 180
		if len(f) > 3 {
			c = code(f[3])
		}
		ev = Provisional{Call: ID(f[1]), Binding: f[2], Code: c}
	case "final":
		if !need(3) {
			return nil
		}
		ev = Final{Call: ID(f[1]), Binding: f[2], Code: code(f[3])}
	case "cancel":
		if !need(1) {
			return nil
		}
		ev = Cancelled{Call: ID(f[1])}
	case "hangup":
		if !need(1) {
			return nil
		}
		ev = Hangup{Call: ID(f[1])}
	case "pushfailed":
		if !need(2) {
			return nil
		}
		ev = PushFailed{Call: ID(f[1]), Binding: f[2]}
	case "tick", "wait":
		if !need(1) || !strings.HasPrefix(f[1], "+") {
			return fail("%s +DURATION", f[0])
		}
		d, err := time.ParseDuration(f[1][1:])
		if err != nil {
			return fail("%v", err)
		}
		h.now = h.now.Add(d)
		if f[0] == "wait" {
			return nil
		}
		ev = Tick{}
	case "next":
		n := h.m.Next()
		if n.IsZero() {
			return []string{"none"}
		}
		return []string{"at " + n.Sub(epoch).String()}
	case "calls":
		return []string{fmt.Sprintf("active %d remembered %d", h.m.Calls(), h.m.Remembered())}
	case "incall":
		if !need(1) {
			return nil
		}
		return []string{strconv.FormatBool(h.m.InCall(f[1]))}
	default:
		return fail("unknown command %q", f[0])
	}
	var out []string
	for _, a := range h.m.Step(h.now, ev) {
		out = append(out, show(a))
	}
	return out
}

// binding reads ID DEVICE [push] [live].
func binding(f []string) Binding {
	return Binding{ID: f[0], Device: f[1], Push: slices.Contains(f[2:], "push"), Live: slices.Contains(f[2:], "live")}
}

func show(a Action) string {
	cause := func(r Reason) string {
		if r == ReasonNone {
			return ""
		}
		return fmt.Sprintf(" cause=%d", r.Cause())
	}
	switch a := a.(type) {
	case Fork:
		return fmt.Sprintf("fork %s %s", a.Call, a.Binding)
	case Push:
		return fmt.Sprintf("push %s %s %s", a.Call, a.Binding, a.Type)
	case CancelBranch:
		return fmt.Sprintf("cancel-branch %s %s%s", a.Call, a.Binding, cause(a.Reason))
	case Respond:
		s := fmt.Sprintf("respond %s %d", a.Call, a.Code)
		if a.Binding != "" {
			s += " from " + a.Binding
		}
		return s
	case LateInvite:
		return fmt.Sprintf("late-invite %s %s%s", a.Call, a.Binding, cause(a.Reason))
	case InCall:
		s := "down"
		if a.Up {
			s = "up"
		}
		return fmt.Sprintf("in-call %s %s %s", a.AOR, a.Device, s)
	}
	return fmt.Sprintf("%T", a)
}
