package main

import (
	"sync"

	"mellium.im/xmpp/jid"

	"pushd/jsm"
)

// inCalls turns the SIP side's per-device call state into jsm's InCall
// (M7): a user is in a call while any of their phones has one up
// through this node. The SIP side does not know a phone's XMPP resource,
// so the state covers every mobile device of the user.
type inCalls struct {
	mu    sync.Mutex
	count map[string]int // AOR → phones with a call up
	step  func(jsm.Event)
}

func newInCalls(step func(jsm.Event)) *inCalls {
	return &inCalls{count: map[string]int{}, step: step}
}

// changed is sip.Deps.InCall.
func (c *inCalls) changed(aor, _ string, up bool) {
	user, err := jid.Parse(aor)
	if err != nil {
		return
	}
	c.mu.Lock()
	before := c.count[aor]
	if up {
		c.count[aor]++
	} else if before > 0 {
		c.count[aor]--
	}
	after := c.count[aor]
	if after == 0 {
		delete(c.count, aor)
	}
	c.mu.Unlock()
	if (before == 0) != (after == 0) {
		c.step(jsm.InCall{User: user.Bare(), Active: after > 0})
	}
}
