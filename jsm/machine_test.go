package jsm

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"mellium.im/xmpp/jid"
)

// TestExpiryDeterministic: devices whose hibernation ends in the same Step
// are closed in deadline-then-JID order, whatever the map order (DESIGN
// rule 1: the backup replays the same events to the same actions).
func TestExpiryDeterministic(t *testing.T) {
	run := func() []string {
		var users []jid.JID
		for i := range 20 {
			users = append(users, jid.MustParse(fmt.Sprintf("u%02d@localhost", i)))
		}
		m := New(DefaultConfig(), State{Users: users})
		now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		for i, u := range users {
			full, _ := u.WithResource("r")
			m.Step(now, Bound{Stream: StreamID(i + 1), JID: full})
			m.Step(now, Detached{Stream: StreamID(i + 1)})
		}
		if d, ok := m.NextDeadline(); !ok || !d.Equal(now.Add(300*time.Second)) {
			t.Fatalf("NextDeadline = %v, %v", d, ok)
		}
		var got []string
		for _, a := range m.Step(now.Add(300*time.Second), Tick{}) {
			got = append(got, fmt.Sprint(a))
		}
		if _, ok := m.NextDeadline(); ok {
			t.Fatal("deadline left after every device expired")
		}
		return got
	}
	first := run()
	if len(first) != 20 {
		t.Fatalf("got %d actions, want 20 closes: %v", len(first), first)
	}
	for range 5 {
		if again := run(); !slices.Equal(first, again) {
			t.Fatalf("replay differs:\n%v\n%v", first, again)
		}
	}
}
