package router

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"pushd/internal/stanza"
	"pushd/jsm"
)

// Forwarding keeps the stanzas this node forwards to each user of another
// node in the order they were routed here, across a change of that user's
// node (BEHAVIOUR H2, H3): a stanza sent to a primary that died before
// it took it must reach the new primary before anything routed later, and
// so must a stanza routed while this node is taking the user over.
//
// Each user with stanzas on their way has a lane. While the lane is
// direct, stanzas go out at once to the node the cluster names; a
// replication stream keeps the order of what goes to one node. The lane
// stops being direct when an attempt fails, when the cluster names no
// node (a takeover is under way), or when the user's node changes while
// stanzas to the old one are unconfirmed: from then on what is routed for
// the user is held, and one mover delivers everything unconfirmed and
// held, in order, where the user now lives, then opens the lane again.

// errNoHome: the cluster named no node for the user; the lane moves.
var errNoHome = errors.New("router: no node serves the user yet")

// forwardRetry bounds how long a stanza for an unreachable node waits for
// the cluster to declare it dead and name a new home (H3's detection takes
// 2–3 s on a LAN).
const forwardRetry = 15 * time.Second

type lanes struct {
	mu sync.Mutex
	by map[string]*lane // users with stanzas on their way
}

type lane struct {
	node   string     // where the direct stanzas went
	sent   []*pending // sent directly, unconfirmed, in routing order
	held   []*pending // routed while the lane was not direct
	moving bool       // a mover owns sent and held
	failed bool       // the mover must ask where the user lives now
}

// pending is one forwarded stanza until its node holds it.
type pending struct {
	el      *stanza.Element
	attempt func() error  // the direct send's wait
	taken   bool          // the mover delivers it
	done    chan struct{} // closed when the mover is done with it
	err     error
}

// Forwarding reports whether stanzas for user are on their way through
// this node's lane: what is routed for user must join them, even once
// the user is served here (jsm's Config.Remote).
// It is called by jsm, under s.mu.
func (s *Server) Forwarding(user string) bool {
	if s.pastLanes {
		// A lane's own mover delivers here, or a stanza another node
		// forwarded is routed: its order is its own node's lane's. Held
		// behind this node's lane it could wait on a stanza on its way
		// to the node it came from, which could wait on it in turn.
		return false
	}
	s.lanes.mu.Lock()
	defer s.lanes.mu.Unlock()
	_, ok := s.lanes.by[user]
	return ok
}

// forward sends el, a stanza for user, to node ("" when the cluster names
// none yet) through user's lane. The wait returns once the node that
// serves user holds what the stanza caused durably; the sender's ack
// depends on it.
func (s *Server) forward(user, node string, el *stanza.Element) func() error {
	// An id lets the recipient's node drop a copy: a stanza resent to a
	// new primary may have reached the old one, and its backup, already.
	if forwardID(el) == "" {
		el.Add(stanza.New(stanza.NSInternal, "fwd", "id", s.forwardPrefix+strconv.FormatUint(s.forwardSeq.Add(1), 36)))
	}
	p := &pending{el: el, done: make(chan struct{})}
	ls := &s.lanes
	ls.mu.Lock()
	if ls.by == nil {
		ls.by = map[string]*lane{}
	}
	l := ls.by[user]
	if l == nil {
		l = &lane{node: node}
		ls.by[user] = l
	}
	switch {
	case l.moving:
		l.held = append(l.held, p)
	case node == "":
		l.held = append(l.held, p)
		s.startMover(user, l, true)
	case len(l.sent) > 0 && node != l.node:
		// The user moved while stanzas to the old node are unconfirmed:
		// this one waits until they are (or fail and the mover takes
		// all).
		l.held = append(l.held, p)
	default:
		l.node = node
		// Submitted under the lane's lock so that the stream sees the
		// lane's order; Forward only submits.
		p.attempt = s.cfg.Cluster.Forward(node, el)
		l.sent = append(l.sent, p)
	}
	ls.mu.Unlock()
	if p.attempt == nil {
		return p.wait
	}
	return func() error { return s.confirm(user, l, p) }
}

func (p *pending) wait() error {
	<-p.done
	return p.err
}

// confirm waits for a direct stanza's node to hold it. A failure hands
// the lane to a mover, which delivers it and everything after it where
// the user lives now.
func (s *Server) confirm(user string, l *lane, p *pending) error {
	err := p.attempt()
	ls := &s.lanes
	ls.mu.Lock()
	if p.taken {
		ls.mu.Unlock()
		return p.wait()
	}
	if err != nil {
		s.startMover(user, l, true)
		ls.mu.Unlock()
		return p.wait()
	}
	for i, q := range l.sent {
		if q == p {
			l.sent = append(l.sent[:i], l.sent[i+1:]...)
			break
		}
	}
	switch {
	case len(l.sent) > 0:
	case len(l.held) > 0:
		s.startMover(user, l, false) // the user moved: the held go there
	default:
		delete(ls.by, user)
	}
	ls.mu.Unlock()
	return nil
}

// startMover makes l not direct and starts its mover unless it runs;
// failed: the node l.sent went to did not take them. s.lanes.mu is held.
func (s *Server) startMover(user string, l *lane, failed bool) {
	l.failed = l.failed || failed
	if l.moving {
		return
	}
	l.moving = true
	go s.move(user, l)
}

// move delivers the lane's stanzas in order where user lives now, until
// none is left, then opens the lane again (or drops it).
func (s *Server) move(user string, l *lane) {
	ls := &s.lanes
	deadline := time.Now().Add(forwardRetry)
	var batch []*pending
	for backoff := 50 * time.Millisecond; ; {
		ls.mu.Lock()
		if l.failed {
			// What was sent directly may be lost with its node: sent again
			// first (a copy the node holds already is dropped by its id).
			for _, p := range l.sent {
				p.taken = true
			}
			batch = append(batch, l.sent...)
			l.sent, l.failed = nil, false
		}
		batch = append(batch, l.held...)
		l.held = nil
		if len(batch) == 0 {
			// Nothing went direct while the mover owned the lane.
			delete(ls.by, user)
			ls.mu.Unlock()
			return
		}
		ls.mu.Unlock()
		rest, err := s.deliver(user, batch)
		batch = rest
		if err == nil {
			backoff, deadline = 50*time.Millisecond, time.Now().Add(forwardRetry)
			continue
		}
		if time.Now().After(deadline) {
			for _, p := range batch {
				p.err = err
				close(p.done)
			}
			batch = nil
			s.log.Warn("cluster: stanzas for a user whose node cannot be reached dropped unacknowledged",
				"user", s.Redact(user), "count", len(rest), "err", err)
			continue
		}
		// Capped low: the wait ends when membership names a new home,
		// and a retry is only a placement lookup and a dial.
		time.Sleep(backoff)
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// deliver hands batch, in order, to where user lives now: this node's
// session manager or another node. It returns what is still to deliver
// (from the first failure on) and the failure.
func (s *Server) deliver(user string, batch []*pending) ([]*pending, error) {
	// Home waits for a takeover under way here.
	here, node, _ := s.cfg.Cluster.Home(user)
	if here {
		waits := make([]func() error, len(batch))
		for i, p := range batch {
			waits[i] = s.stepMoved(p.el)
		}
		for i, w := range waits {
			if err := w(); err != nil {
				return batch[i:], err
			}
			close(batch[i].done)
		}
		return nil, nil
	}
	if node == "" {
		return batch, errNoHome
	}
	waits := make([]func() error, len(batch))
	for i, p := range batch {
		waits[i] = s.cfg.Cluster.Forward(node, p.el)
	}
	for i, w := range waits {
		if err := w(); err != nil {
			return batch[i:], err
		}
		close(batch[i].done)
	}
	return nil, nil
}

// stepMoved routes a stanza of a lane here: the lane's own delivery.
func (s *Server) stepMoved(el *stanza.Element) (wait func() error) {
	if id := forwardID(el); id != "" && !s.forwards.add(id) {
		return func() error { return nil } // a copy of one already routed
	}
	return joinWaits(s.stepPastLanes(jsm.Forwarded{Stanza: el}))
}

// stepPastLanes is step for a stanza that must not join a lane
// (Forwarding).
func (s *Server) stepPastLanes(ev jsm.Event) []func() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pastLanes = true
	local, replicated := s.stepCollect(ev)
	s.pastLanes = false
	return append(local, replicated...)
}

// joinWaits is one wait for all of waits, in order.
func joinWaits(waits []func() error) func() error {
	return func() error {
		for _, w := range waits {
			if err := w(); err != nil {
				return err
			}
		}
		return nil
	}
}
