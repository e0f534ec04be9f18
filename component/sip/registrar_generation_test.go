package sip

import (
	"testing"
	"time"

	"pushd/component/dispatch"
)

// The server keeps NextRefresh's answer until Generation moves: every way
// a binding is stored or removed must move it, and reads must not.
func TestRegistrarGenerationMovesOnEveryChange(t *testing.T) {
	r, err := OpenRegistrar(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	all := func(string) bool { return true }
	b := Binding{AOR: "alice@localhost", ID: "phone", Contact: "sip:alice@127.0.0.1:5070", Transport: "udp",
		Push: &PushParams{Provider: dispatch.APNS, PRID: "00ff", Param: "T.com.example.app.voip"}, PNSReg: true,
		CallID: "c", CSeq: 1, Updated: now, Expires: now.Add(600 * time.Second)}
	changes := []struct {
		what string
		do   func() error
	}{
		{"register", func() error { _, err := r.Apply(b.AOR, Update{Store: []Binding{b}}, now); return err }},
		{"refresh flag", func() error { c := b; c.Refreshed = true; return r.Put(c) }},
		{"dead token", func() error { _, err := r.DropPush(b.AOR, b.ID, "00ff"); return err }},
		{"replicated copy", func() error { c := b; c.Updated = now.Add(time.Second); _, err := r.Import(c, false); return err }},
		{"delete", func() error { return r.Delete(b.AOR, b.ID) }},
	}
	for _, c := range changes {
		before := r.Generation()
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if r.Generation() == before {
			t.Errorf("%s: generation did not move", c.what)
		}
		g := r.Generation()
		r.NextRefresh(120*time.Second, all)
		r.RefreshDue(now, 120*time.Second, all)
		r.Bindings(b.AOR, now)
		if r.Generation() != g {
			t.Errorf("after %s: a read moved the generation", c.what)
		}
	}
}
