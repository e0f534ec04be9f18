package router

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
	"pushd/jsm"
)

// moveCluster is a Cluster in which alice's node goes through what a
// failover does to it: she lives on "P" (which died: nothing it is sent
// arrives), then this node takes her over (Serving names no node and Home
// waits), then she lives here.
type moveCluster struct {
	mu       sync.Mutex
	phase    int           // 0: on P, 1: takeover under way here, 2: here
	takeover chan struct{} // closed when phase 2 begins
	sent     []string      // bodies forwarded to P
}

const (
	onP = iota
	takingOver
	servedHere
	onQ // a live node that takes what it is sent
)

func (c *moveCluster) at() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.phase
}

func (c *moveCluster) set(phase int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.phase = phase
	if phase == servedHere {
		close(c.takeover)
	}
}

func (c *moveCluster) remote(user string) bool {
	return user == "alice@localhost" && c.at() != servedHere
}

// startLaneServer runs a router whose cluster is mc.
func startLaneServer(t *testing.T, mc *moveCluster) (*Server, *gatedQueue) {
	t.Helper()
	var srv *Server
	jcfg := jsm.DefaultConfig()
	jcfg.Remote = func(user string) bool { return srv.Forwarding(user) || mc.remote(user) }
	srv, q := testRouterQueue(t, func(cfg *Config) { cfg.Cluster = mc }, jcfg)
	t.Cleanup(func() {
		if mc.at() == takingOver {
			mc.set(servedHere) // before the server stops: a mover may wait in Home
		}
	})
	return srv, q
}

func (c *moveCluster) Home(user string) (bool, string, string) {
	if user != "alice@localhost" {
		return true, "", ""
	}
	switch c.at() {
	case onP:
		return false, "P", "127.0.0.1:1"
	case takingOver:
		<-c.takeover
	case onQ:
		return false, "Q", "127.0.0.1:2"
	}
	return true, "", ""
}

func (c *moveCluster) Serving(user string) string {
	if user != "alice@localhost" {
		return ""
	}
	switch c.at() {
	case onP:
		return "P"
	case takingOver:
		return ""
	case onQ:
		return "Q"
	}
	return "here"
}

func (c *moveCluster) Claimed(u string) (bool, string, string) { return c.Home(u) }
func (c *moveCluster) AwaitMoved(_, _ string, stop <-chan struct{}) bool {
	<-stop
	return false
}
func (c *moveCluster) Rehome(string, string) (string, string, bool) { return "", "", false }

func (c *moveCluster) Forward(node string, st *stanza.Element) func() error {
	c.mu.Lock()
	c.sent = append(c.sent, st.ChildText(stanza.NSClient, "body"))
	c.mu.Unlock()
	if node == "Q" {
		return nop
	}
	return func() error { return errors.New("P is gone") }
}

func (c *moveCluster) forwarded() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sent)
}

func nop() error { return nil }

func (*moveCluster) Enqueue(string, []jsm.Entry) func() error    { return nop }
func (*moveCluster) Trim(string, uint64) func() error            { return nop }
func (*moveCluster) Remove(string, []uint64) func() error        { return nop }
func (*moveCluster) Drop(string) func() error                    { return nop }
func (*moveCluster) Session(SessionState) func() error           { return nop }
func (*moveCluster) SessionGone(string) func() error             { return nop }
func (*moveCluster) StoreOffline(string, jsm.Entry) func() error { return nop }
func (*moveCluster) TakeOffline(string, uint64) func() error     { return nop }

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// H2's detection window (issue 11, observation 1): what bob sends alice
// while her primary is dead but not yet declared so, and while this node
// takes her over, is acknowledged only once it is in her device's queue
// here, and lands there in the order bob sent it, before what he sends
// once she is served here; none of it goes to the offline store.
func TestForwardLaneKeepsOrderAcrossTakeover(t *testing.T) {
	mc := &moveCluster{takeover: make(chan struct{})}
	srv, q := startLaneServer(t, mc)

	b := xmpptest.Dial(t, srv.Addr("c2s"), "localhost")
	if cond := b.AuthPlain("bob", "pw"); cond != "" {
		t.Fatal(cond)
	}
	b.Bind("desk")
	b.Send(`<enable xmlns='urn:xmpp:sm:3'/>`)
	b.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	send := func(body string) {
		b.Send(`<message to='alice@localhost/phone' type='chat'><body>` + body + `</body></message><r xmlns='urn:xmpp:sm:3'/>`)
	}
	var handled atomic.Value // bob's last <a h/>
	handled.Store("")
	go func() {
		for {
			el, err := b.Next()
			if err != nil {
				return
			}
			if el.Is(stanza.NSSM, "a") {
				handled.Store(el.Get("h"))
			}
		}
	}()

	// Alice's primary is dead: the first message goes there and is lost.
	send("m1")
	waitUntil(t, "m1 sent to the dead primary", func() bool { return mc.forwarded() >= 1 })
	// Membership names this node; the takeover runs.
	mc.set(takingOver)
	send("m2")
	send("m3")
	waitUntil(t, "m2 and m3 held", func() bool { return heldOf(srv, "alice@localhost") == 2 })
	if h := handled.Load(); h != "" {
		t.Fatalf("H2: acknowledged (h=%s) before alice's new primary held it", h)
	}
	// The takeover: alice's phone comes back here, hibernating.
	srv.Adopt([]AdoptedSession{{Device: "alice@localhost/phone", SMID: "sm-alice"}},
		map[string]jsm.QueueInfo{"alice@localhost/phone": {}}, nil, nil)
	mc.set(servedHere)
	send("m4")
	waitUntil(t, "all four acknowledged", func() bool { return handled.Load() == "4" })

	var got []string
	_ = q.Read("alice@localhost/phone", 0, func(e jsm.Entry) error {
		got = append(got, e.Stanza.ChildText(stanza.NSClient, "body"))
		return nil
	})
	if want := []string{"m1", "m2", "m3", "m4"}; !slices.Equal(got, want) {
		t.Fatalf("alice's queue holds %q, want %q", got, want)
	}
	srv.mu.Lock()
	open := srv.Forwarding("alice@localhost")
	srv.mu.Unlock()
	if open {
		t.Error("alice's lane still open once everything was delivered")
	}
}

func heldOf(s *Server, user string) int {
	s.lanes.mu.Lock()
	defer s.lanes.mu.Unlock()
	l := s.lanes.by[user]
	if l == nil {
		return 0
	}
	return len(l.held) + len(l.sent)
}

// A client without XEP-0198 never asks for acknowledgements: its
// forwarded stanzas are confirmed all the same, and their lane closes.
func TestForwardLaneClosesWithoutStreamManagement(t *testing.T) {
	mc := &moveCluster{takeover: make(chan struct{}), phase: onQ}
	srv, _ := startLaneServer(t, mc)
	b := xmpptest.Dial(t, srv.Addr("c2s"), "localhost")
	if cond := b.AuthPlain("bob", "pw"); cond != "" {
		t.Fatal(cond)
	}
	b.Bind("desk")
	b.Send(`<message to='alice@localhost/phone' type='chat'><body>hi</body></message>`)
	waitUntil(t, "the message forwarded to alice's node", func() bool { return mc.forwarded() == 1 })
	waitUntil(t, "alice's lane closed", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return !srv.Forwarding("alice@localhost")
	})
}
