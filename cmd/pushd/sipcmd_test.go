package main

import (
	"strings"
	"testing"
	"time"

	"pushd/component/dispatch"
	"pushd/component/sip"
)

// pushd sip bindings lists one user's bindings and never a whole push
// token (it is the device's credential).
func TestSIPBindingsListing(t *testing.T) {
	reg, err := sip.OpenRegistrar(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, b := range []sip.Binding{
		{AOR: "alice@localhost", ID: "a", Contact: "sip:alice@192.0.2.1", Expires: now.Add(time.Hour),
			Push: &sip.PushParams{Provider: dispatch.APNS, PRID: sipPhonePRID, Param: sipPNParam}},
		{AOR: "bob@localhost", ID: "b", Contact: "sip:bob@192.0.2.2", Expires: now.Add(time.Hour)},
	} {
		if err := reg.Put(b); err != nil {
			t.Fatal(err)
		}
	}
	list, err := registrarBindings{r: reg}.SIPBindings("alice@localhost")
	if err != nil || len(list) != 1 {
		t.Fatalf("alice's bindings: %+v %v", list, err)
	}
	if b := list[0]; b.Provider != "apns" || !b.VoIP || strings.Contains(b.Token, sipPhonePRID[8:]) || b.Token == "" {
		t.Fatalf("listed %+v", b)
	}
	if all, _ := (registrarBindings{r: reg}).SIPBindings(""); len(all) != 2 {
		t.Fatalf("every binding: %+v", all)
	}
}
