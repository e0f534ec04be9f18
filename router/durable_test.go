package router

import (
	"context"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/scram"
	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
	"pushd/jsm"
)

// gatedQueue holds every append until the test opens the gate.
type gatedQueue struct {
	gate chan struct{}
	mu   sync.Mutex
	q    map[string][]jsm.Entry
}

func (g *gatedQueue) AppendAsync(device string, entries []jsm.Entry) func() error {
	g.mu.Lock()
	g.q[device] = append(g.q[device], entries...)
	g.mu.Unlock()
	return func() error { <-g.gate; return nil }
}
func (g *gatedQueue) RemoveAsync(string, []uint64) func() error { return func() error { return nil } }
func (g *gatedQueue) TrimAsync(string, uint64) func() error     { return func() error { return nil } }
func (g *gatedQueue) DropAsync(string) func() error             { return func() error { return nil } }
func (g *gatedQueue) StoreOfflineAsync(string, *stanza.Element) (uint64, func() error) {
	return 1, func() error { return nil }
}
func (g *gatedQueue) TakeOffline(string) ([]*stanza.Element, uint64, error) { return nil, 0, nil }
func (g *gatedQueue) ReadOffline(string) ([]jsm.Entry, error)               { return nil, nil }
func (g *gatedQueue) Read(device string, from uint64, fn func(jsm.Entry) error) error {
	g.mu.Lock()
	es := append([]jsm.Entry(nil), g.q[device]...)
	g.mu.Unlock()
	for _, e := range es {
		if e.Seq >= from {
			if err := fn(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// onePassword accepts every user with the password "pw".
type onePassword struct{}

func (onePassword) SCRAMCredentials(user, mech string) (scram.Credentials, error) {
	m, _ := scram.ByName(mech)
	salt := []byte("salt")
	keys, err := m.DeriveKeys([]byte("pw"), salt, 4096)
	return scram.Credentials{Salt: salt, Iterations: 4096, Keys: keys}, err
}
func (onePassword) VerifyPlain(user, password string) (bool, error) { return password == "pw", nil }

type noRegs struct{}

func (noRegs) Save(string, jsm.Registration) error  { return nil }
func (noRegs) Delete(string, jid.JID, string) error { return nil }

type noRosters struct{}

func (noRosters) Save(jid.JID, jsm.RosterItem) error { return nil }
func (noRosters) Delete(jid.JID, jid.JID) error      { return nil }

// DESIGN rule 2: a stanza queued for a suspended device is acknowledged to
// its sender only once the queue says it is durable.
func TestAckWaitsForDurableQueue(t *testing.T) {
	alice, bob := jid.MustParse("alice@localhost"), jid.MustParse("bob@localhost")
	machine := jsm.New(jsm.DefaultConfig(), jsm.State{Users: []jid.JID{alice, bob}})
	q := &gatedQueue{gate: make(chan struct{}), q: map[string][]jsm.Entry{}}
	cfg := DefaultConfig()
	cfg.C2SListen, cfg.ComponentListen = "127.0.0.1:0", ""
	cfg.RequireTLS, cfg.AllowPlainWithoutTLS = false, true
	srv, err := New(cfg, machine, Stores{Accounts: onePassword{}, Queue: q, Rosters: noRosters{}, PushRegistrations: noRegs{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx) }()
	released := false
	defer func() {
		if !released {
			close(q.gate)
		}
		cancel()
		<-done
	}()
	addr := srv.Addr("c2s")

	login := func(user, res string) *xmpptest.Client {
		c := xmpptest.Dial(t, addr, "localhost")
		if cond := c.AuthPlain(user, "pw"); cond != "" {
			t.Fatal(cond)
		}
		c.Bind(res)
		c.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/><presence/>`)
		c.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
		return c
	}
	a := login("alice", "phone")
	_ = a.Conn.Close() // alice's phone drops off: her stream hibernates
	for deadline := time.Now().Add(10 * time.Second); ; {
		if d := srv.Devices(alice); len(d) == 1 && d[0].Detached {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("alice's stream never detached")
		}
		time.Sleep(5 * time.Millisecond)
	}

	b := login("bob", "desk")
	b.Send(`<message to='alice@localhost/phone' type='chat'><body>hi</body></message><r xmlns='urn:xmpp:sm:3'/><iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>`)
	// The ping is answered after <r/> was read; an early <a/> would come
	// before its result.
	b.Expect("ping result", func(e *stanza.Element) bool {
		if e.Is(stanza.NSSM, "a") {
			t.Fatalf("acknowledged before the queue was durable: %s", e)
		}
		return e.Get("id") == "p1"
	})
	close(q.gate)
	released = true
	if a := b.Expect("ack", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") }); a.Get("h") != "2" {
		t.Errorf("ack h=%s, want 2 (presence and message)", a.Get("h"))
	}
}
