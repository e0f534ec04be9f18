package main

import (
	"testing"

	"pushd/jsm"
)

// M7: jsm hears a user is in a call when the first of their phones has a
// call up, and that it ended when the last one's ends.
func TestInCallsTransitions(t *testing.T) {
	var got []jsm.InCall
	c := newInCalls(func(e jsm.Event) { got = append(got, e.(jsm.InCall)) })
	c.changed("alice@localhost", "apns/a", true)
	c.changed("alice@localhost", "apns/b", true)
	c.changed("alice@localhost", "apns/a", false)
	if len(got) != 1 || !got[0].Active || got[0].User.String() != "alice@localhost" {
		t.Fatalf("after two up, one down: %+v", got)
	}
	c.changed("alice@localhost", "apns/b", false)
	c.changed("alice@localhost", "apns/b", false) // a stray down changes nothing
	if len(got) != 2 || got[1].Active {
		t.Fatalf("after both down: %+v", got)
	}
}
