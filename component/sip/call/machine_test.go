package call

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"pushd/component/payload"
)

func TestNewTakesDefaultsForZeroFields(t *testing.T) {
	m := New(Config{RingAfter: 2 * time.Second})
	m.Step(epoch, Invite{Call: "c1", AOR: "alice", Bindings: []Binding{{ID: "b1", Push: true}}})
	var when []time.Duration
	for n := m.Next(); !n.IsZero(); n = m.Next() {
		when = append(when, n.Sub(epoch))
		m.Step(n, Tick{})
	}
	// 180 at 2 s (set), 480 at 13 s, forgotten 30 s later (defaults).
	want := []time.Duration{2 * time.Second, 13 * time.Second, 43 * time.Second}
	if !slices.Equal(when, want) {
		t.Fatalf("deadlines %v, want %v", when, want)
	}
	if d := DefaultConfig(); d.RingAfter != 5*time.Second || d.GiveUpAfter != 13*time.Second ||
		d.NoAnswerAfter != 90*time.Second || d.LateWindow != 30*time.Second {
		t.Fatalf("DefaultConfig %+v", d)
	}
}

func TestReasonHeader(t *testing.T) {
	for _, c := range []struct {
		r      Reason
		header string
		cause  int
	}{
		{ReasonNone, "", 0},
		{ReasonAnsweredElsewhere, `SIP;cause=200;text="Call completed elsewhere"`, 200},
		{ReasonDeclinedElsewhere, `SIP;cause=600;text="Busy Everywhere"`, 600},
	} {
		if c.r.String() != c.header || c.r.Cause() != c.cause {
			t.Errorf("%d: %q %d, want %q %d", c.r, c.r.String(), c.r.Cause(), c.header, c.cause)
		}
	}
}

// The caller's answer when every branch failed: RFC 3261 §16.7 as
// simplified in best. Each case is a live-only call whose branches answer
// in order; with pushed, a phone is pushed too and its push fails last.
func TestBestResponse(t *testing.T) {
	for _, c := range []struct {
		codes  []int
		pushed bool
		want   string
	}{
		{[]int{486}, false, "486 b0"},
		{[]int{404, 486}, false, "486 b1"},
		{[]int{486, 404}, false, "486 b0"},
		{[]int{480, 404}, false, "404 b1"},
		{[]int{408, 480}, false, "480 b1"},
		{[]int{404, 403}, false, "404 b0"},
		{[]int{500, 404}, false, "404 b1"},
		{[]int{302, 486}, false, "302 b0"},
		{[]int{503}, false, "500 pushd"},
		{[]int{503, 502}, false, "502 b1"},
		{[]int{502, 503}, false, "502 b0"},
		// pushd's own 480 competes when a pushed phone never got a branch.
		{[]int{503}, true, "480 pushd"},
		{[]int{408}, true, "480 pushd"},
		{[]int{480}, true, "480 b0"},
		{[]int{404}, true, "404 b0"},
		{[]int{302}, true, "302 b0"},
		{nil, true, "480 pushd"},
	} {
		t.Run(fmt.Sprint(c.codes, c.pushed), func(t *testing.T) {
			m := New(Config{})
			inv := Invite{Call: "c", AOR: "a"}
			for i := range c.codes {
				inv.Bindings = append(inv.Bindings, Binding{ID: fmt.Sprintf("b%d", i), Live: true})
			}
			if c.pushed {
				inv.Bindings = append(inv.Bindings, Binding{ID: "p", Device: "apns/p", Push: true})
			}
			var got []Action
			got = append(got, m.Step(epoch, inv)...)
			for i, code := range c.codes {
				got = append(got, m.Step(epoch, Final{Call: "c", Binding: fmt.Sprintf("b%d", i), Code: code})...)
			}
			if c.pushed {
				got = append(got, m.Step(epoch, PushFailed{Call: "c", Binding: "p"})...)
			}
			var answer string
			for _, a := range got {
				if r, ok := a.(Respond); ok {
					if answer != "" {
						t.Fatalf("two answers: %s and %+v", answer, r)
					}
					answer = fmt.Sprintf("%d %s", r.Code, r.Binding)
					if r.Binding == "" {
						answer += "pushd"
					}
				}
			}
			if answer != c.want {
				t.Fatalf("answer %q, want %q", answer, c.want)
			}
		})
	}
}

// A push binding that is live is forked and pushed (C2); the same device
// answering gets no end push, the others do, through the binding each was
// pushed by.
func TestAnswerPushesTheOthersOnce(t *testing.T) {
	m := New(Config{})
	out := m.Step(epoch, Invite{Call: "c", AOR: "a", Bindings: []Binding{
		{ID: "p1", Device: "apns/p", Push: true, Live: true},
		{ID: "t1", Device: "fcm/t", Push: true},
		{ID: "t2", Device: "fcm/t", Push: true},
	}})
	want := []Action{
		Fork{Call: "c", Binding: "p1"},
		Push{Call: "c", Binding: "p1", Type: payload.TypeCall},
		Push{Call: "c", Binding: "t1", Type: payload.TypeCall},
	}
	if !slices.Equal(out, want) {
		t.Fatalf("invite: %v, want %v", out, want)
	}
	out = m.Step(epoch.Add(time.Second), Final{Call: "c", Binding: "p1", Code: 200})
	want = []Action{
		Push{Call: "c", Binding: "t1", Type: payload.TypeAnsweredElsewhere},
		InCall{AOR: "a", Device: "apns/p", Up: true},
	}
	if !slices.Equal(out, want) {
		t.Fatalf("answer: %v, want %v", out, want)
	}
	if !m.InCall("a") || m.InCall("b") || m.Calls() != 1 {
		t.Fatalf("InCall a %v b %v, Calls %d", m.InCall("a"), m.InCall("b"), m.Calls())
	}
}

// Many calls end and are forgotten: nothing is left behind, indexes
// included.
func TestForgetsEverything(t *testing.T) {
	m := New(Config{})
	now := epoch
	for i := range 1000 {
		id := ID(fmt.Sprint("c", i))
		aor := fmt.Sprint("aor", i%7)
		m.Step(now, Invite{Call: id, AOR: aor, Bindings: []Binding{{ID: "d", Live: true}, {ID: "p", Device: "apns/p", Push: true}}})
		switch i % 4 {
		case 0:
			m.Step(now, Cancelled{Call: id})
		case 1:
			m.Step(now, Final{Call: id, Binding: "d", Code: 200})
			m.Step(now, Hangup{Call: id})
		case 2:
			m.Step(now, Final{Call: id, Binding: "d", Code: 603})
		}
		now = now.Add(10 * time.Millisecond)
	}
	for n := m.Next(); !n.IsZero(); n = m.Next() {
		m.Step(n, Tick{})
	}
	if m.Calls() != 0 || m.Remembered() != 0 || len(m.calls) != 0 || len(m.byAOR) != 0 {
		t.Fatalf("left: Calls %d Remembered %d, %d calls %d AORs", m.Calls(), m.Remembered(), len(m.calls), len(m.byAOR))
	}
}
