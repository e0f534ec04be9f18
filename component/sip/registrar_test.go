package sip

import (
	"errors"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"pushd/component/dispatch"
)

var t0 = time.Unix(1_800_000_000, 0)

func testBinding(id string, expires time.Duration) Binding {
	return Binding{AOR: "alice@" + testDomain, ID: id, Contact: "sip:alice@" + id, Transport: "udp",
		CallID: "c-" + id, CSeq: 1, Expires: t0.Add(expires), Updated: t0}
}

func pushBinding(id string, expires time.Duration) Binding {
	b := testBinding(id, expires)
	b.Push = &PushParams{Provider: dispatch.APNS, PRID: "tok-" + id, Param: "TEAM.com.example.app.voip"}
	b.PNSReg = true
	return b
}

func ids(bs []Binding) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.ID)
	}
	return out
}

func openBadger(t *testing.T, dir string) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// Bindings survive a restart (docs/sip.md): what Apply stored, Put
// changed and Delete removed is what a reopened registrar loads.
func TestRegistrarPersists(t *testing.T) {
	dir := t.TempDir()
	db := openBadger(t, dir)
	r, err := OpenRegistrar(db)
	if err != nil {
		t.Fatal(err)
	}
	aor := "alice@" + testDomain
	if _, err := r.Apply(aor, Update{Store: []Binding{testBinding("a", time.Hour), pushBinding("b", time.Hour), testBinding("c", time.Hour)}}, t0); err != nil {
		t.Fatal(err)
	}
	b := pushBinding("b", time.Hour)
	b.Refreshed = true
	if err := r.Put(b); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(aor, "c"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openBadger(t, dir)
	defer db.Close()
	r, err = OpenRegistrar(db)
	if err != nil {
		t.Fatal(err)
	}
	got := r.Bindings(aor, t0)
	if len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" || !got[1].Refreshed || got[1].Push == nil || got[1].Push.PRID != "tok-b" {
		t.Fatalf("after reopen: %+v", got)
	}
}

// RFC 3261 §10.3 7: a REGISTER no newer than the one that set a binding
// (same Call-ID, CSeq not higher) changes nothing, not even its other
// contacts; expired bindings go with any change to their AOR.
func TestRegistrarApply(t *testing.T) {
	r, _ := OpenRegistrar(nil)
	aor := "alice@" + testDomain
	if _, err := r.Apply(aor, Update{Store: []Binding{testBinding("a", time.Hour), testBinding("short", time.Minute)}}, t0); err != nil {
		t.Fatal(err)
	}
	again := testBinding("a", 2*time.Hour)
	if _, err := r.Apply(aor, Update{Store: []Binding{testBinding("new", time.Hour), again}}, t0); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("same CSeq: %v, want ErrOutOfOrder", err)
	}
	if got := ids(r.Bindings(aor, t0)); len(got) != 2 {
		t.Fatalf("an out-of-order REGISTER changed the AOR: %v", got)
	}
	again.CSeq = 2
	got, err := r.Apply(aor, Update{Store: []Binding{again}}, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != "a" || !got[0].Expires.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("refresh: %+v (the expired binding should be gone)", got)
	}
	if n := r.Count(); n != 1 {
		t.Errorf("Count %d, want 1", n)
	}
}

// C8: a +sip.pnsreg push binding is due a refresh push from
// RefreshPushBefore before its expiry, once per registration, and only
// at the node that serves its user; Sweep drops expired bindings.
func TestRegistrarRefreshAndSweep(t *testing.T) {
	r, _ := OpenRegistrar(nil)
	aor := "alice@" + testDomain
	plain := pushBinding("plain", 5*time.Minute)
	plain.PNSReg = false
	if _, err := r.Apply(aor, Update{Store: []Binding{pushBinding("p", 10*time.Minute), pushBinding("q", 20*time.Minute), plain, testBinding("live", 30*time.Minute)}}, t0); err != nil {
		t.Fatal(err)
	}
	all := func(string) bool { return true }
	before := 2 * time.Minute
	if next := r.NextRefresh(before, all); !next.Equal(t0.Add(8 * time.Minute)) {
		t.Fatalf("NextRefresh %v, want t0+8m", next.Sub(t0))
	}
	if next := r.NextRefresh(before, func(string) bool { return false }); !next.IsZero() {
		t.Errorf("NextRefresh for a user another node serves: %v", next.Sub(t0))
	}
	if due := r.RefreshDue(t0.Add(8*time.Minute-time.Second), before, all); len(due) != 0 {
		t.Errorf("due a second early: %v", ids(due))
	}
	due := r.RefreshDue(t0.Add(8*time.Minute), before, all)
	if got := ids(due); len(got) != 1 || got[0] != "p" {
		t.Fatalf("due at t0+8m: %v, want [p]", got)
	}
	if due := r.RefreshDue(t0.Add(8*time.Minute), before, func(string) bool { return false }); len(due) != 0 {
		t.Errorf("due at a node that does not serve alice: %v", ids(due))
	}
	due[0].Refreshed = true
	if err := r.Put(due[0]); err != nil {
		t.Fatal(err)
	}
	if got := ids(r.RefreshDue(t0.Add(9*time.Minute), before, all)); len(got) != 0 {
		t.Errorf("due again after its refresh push: %v", got)
	}
	if next := r.NextRefresh(before, all); !next.Equal(t0.Add(18 * time.Minute)) {
		t.Errorf("NextRefresh after p's push: %v, want t0+18m", next.Sub(t0))
	}

	if err := r.Sweep(t0.Add(15 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := ids(r.All()); len(got) != 2 || got[0] != "live" || got[1] != "q" {
		t.Errorf("after Sweep: %v, want [live q]", got)
	}
	if err := r.Sweep(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, aors := r.Count(), r.AORs(); n != 0 || len(aors) != 0 {
		t.Errorf("after everything expired: %d bindings, AORs %v", n, aors)
	}
}

// P3: a dead token costs the binding its push parameters, not the
// binding; a cluster copy older than what is held is ignored (H1-H3).
func TestRegistrarDropPushAndImport(t *testing.T) {
	r, _ := OpenRegistrar(nil)
	aor := "alice@" + testDomain
	if _, err := r.Apply(aor, Update{Store: []Binding{pushBinding("p", time.Hour)}}, t0); err != nil {
		t.Fatal(err)
	}
	if dropped, _ := r.DropPush(aor, "p", "some-other-token"); dropped {
		t.Error("dropped for a token it does not have")
	}
	if dropped, err := r.DropPush(aor, "p", "tok-p"); !dropped || err != nil {
		t.Fatalf("DropPush: %v %v", dropped, err)
	}
	if bs := r.Bindings(aor, t0); len(bs) != 1 || bs[0].Push != nil {
		t.Fatalf("after DropPush: %+v", bs)
	}

	old := testBinding("p", time.Hour)
	old.Updated = t0.Add(-time.Minute)
	if stored, _ := r.Import(old, false); stored {
		t.Error("an older copy replaced the binding")
	}
	if stored, _ := r.Import(old, true); stored || len(r.Bindings(aor, t0)) != 1 {
		t.Error("an older removal removed the binding")
	}
	newer := testBinding("p", 2*time.Hour)
	newer.Updated = t0.Add(time.Minute)
	if stored, _ := r.Import(newer, false); !stored {
		t.Error("a newer copy was not stored")
	}
	if stored, _ := r.Import(newer, true); stored || len(r.Bindings(aor, t0)) != 0 {
		t.Error("a removal as new as the binding did not remove it")
	}
}
