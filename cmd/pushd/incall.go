package main

import (
	"slices"
	"sync"

	"mellium.im/xmpp/jid"

	"pushd/jsm"
)

// inCalls turns the SIP side's per-device call state into jsm's InCall
// (M7): a user is in a call while any of their phones has one up, through
// this node or any other. The SIP side does not know a phone's XMPP
// resource, so the state covers every mobile device of the user.
//
// In a cluster the call is held by whichever node the INVITE reached,
// while the user's session manager is at their primary, and after a
// failover at another node: so each node tells every other when an AOR's
// calls through it start and end (sip.KindInCall), and every node's jsm
// hears the union. The user's next primary knows already when it takes
// them over.
type inCalls struct {
	mu     sync.Mutex
	local  map[string]int             // AOR → phones with a call up through this node
	remote map[string]map[string]bool // AOR → other nodes with a call up for it
	step   func(jsm.Event)
	// tell, in a cluster, passes this node's changes on to the others.
	tell func(aor string, active bool)
}

func newInCalls(step func(jsm.Event)) *inCalls {
	return &inCalls{local: map[string]int{}, remote: map[string]map[string]bool{}, step: step}
}

// active: under mu.
func (c *inCalls) active(aor string) bool { return c.local[aor] > 0 || len(c.remote[aor]) > 0 }

// changed is sip.Deps.InCall.
func (c *inCalls) changed(aor, _ string, up bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	was, wasHere := c.active(aor), c.local[aor] > 0
	if up {
		c.local[aor]++
	} else if c.local[aor] > 0 {
		c.local[aor]--
	}
	if c.local[aor] == 0 {
		delete(c.local, aor)
	}
	if here := c.local[aor] > 0; here != wasHere && c.tell != nil {
		c.tell(aor, here)
	}
	c.stepChange(aor, was)
}

// remoteChanged applies another node's change.
func (c *inCalls) remoteChanged(node, aor string, active bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.active(aor)
	if active {
		if c.remote[aor] == nil {
			c.remote[aor] = map[string]bool{}
		}
		c.remote[aor][node] = true
	} else if nodes := c.remote[aor]; nodes != nil {
		delete(nodes, node)
		if len(nodes) == 0 {
			delete(c.remote, aor)
		}
	}
	c.stepChange(aor, was)
}

// nodeLost ends the calls a lost node held: they went with it.
func (c *inCalls) nodeLost(node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var lost []string
	for aor, nodes := range c.remote {
		if nodes[node] {
			lost = append(lost, aor)
		}
	}
	slices.Sort(lost) // jsm hears them in one order, run after run
	for _, aor := range lost {
		was := c.active(aor)
		delete(c.remote[aor], node)
		if len(c.remote[aor]) == 0 {
			delete(c.remote, aor)
		}
		c.stepChange(aor, was)
	}
}

// here lists the AORs with a call up through this node, for a member
// that joins (it knows nothing yet).
func (c *inCalls) here() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var aors []string
	for aor := range c.local {
		aors = append(aors, aor)
	}
	slices.Sort(aors)
	return aors
}

// stepChange tells jsm when aor's union state differs from was; under
// mu, so that jsm hears the changes in the order they happened.
func (c *inCalls) stepChange(aor string, was bool) {
	now := c.active(aor)
	if now == was {
		return
	}
	user, err := jid.Parse(aor)
	if err != nil {
		return
	}
	c.step(jsm.InCall{User: user.Bare(), Active: now})
}
