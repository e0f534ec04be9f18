package router

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"

	"mellium.im/xmpp/jid"

	"pushd/internal/peertest"
	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
	"pushd/jsm"
)

// placed is a cluster in which the users in away live on another node,
// whose clients connect at addr; it replicates nothing.
type placed struct {
	away map[string]bool
	addr string
}

func (p placed) Home(user string) (bool, string, string) {
	if p.away[user] {
		return false, "n2", p.addr
	}
	return true, "", ""
}
func (p placed) Serving(string) string                   { return "" }
func (p placed) Claimed(u string) (bool, string, string) { return p.Home(u) }
func (p placed) AwaitMoved(_, _ string, stop <-chan struct{}) bool {
	<-stop
	return false
}
func (p placed) Rehome(string, string) (string, string, bool) { return "", "", false }
func (p placed) Forward(string, *stanza.Element) func() error { return done }
func (p placed) Enqueue(string, []jsm.Entry) func() error     { return done }
func (p placed) Trim(string, uint64) func() error             { return done }
func (p placed) Remove(string, []uint64) func() error         { return done }
func (p placed) Drop(string) func() error                     { return done }
func (p placed) Session(SessionState) func() error            { return done }
func (p placed) SessionGone(string) func() error              { return done }
func (p placed) StoreOffline(string, jsm.Entry) func() error  { return done }
func (p placed) TakeOffline(string, uint64) func() error      { return done }

func done() error { return nil }

// redirectRouter serves localhost over STARTTLS for alice, bob and carol;
// alice lives on another node, at addr.
func redirectRouter(t *testing.T, addr string) *Server {
	t.Helper()
	certFile, keyFile := peertest.SelfSigned(t, t.TempDir(), "localhost")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return testRouter(t, func(cfg *Config) {
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		cfg.Cluster = placed{away: map[string]bool{"alice@localhost": true}, addr: addr}
	}, jsm.DefaultConfig())
}

// testRouter serves localhost on a free port of 127.0.0.1 for alice, bob
// and carol (password "pw"), in the clear unless mutate sets TLS.
func testRouter(t *testing.T, mutate func(*Config), jcfg jsm.Config) *Server {
	t.Helper()
	srv, _ := testRouterQueue(t, mutate, jcfg)
	return srv
}

// testRouterQueue is testRouter, and the queue store it writes to.
func testRouterQueue(t *testing.T, mutate func(*Config), jcfg jsm.Config) (*Server, *gatedQueue) {
	t.Helper()
	users := []jid.JID{jid.MustParse("alice@localhost"), jid.MustParse("bob@localhost"), jid.MustParse("carol@localhost")}
	cfg := DefaultConfig()
	cfg.C2SListen, cfg.ComponentListen = "127.0.0.1:0", ""
	cfg.RequireTLS, cfg.AllowPlainWithoutTLS = false, true
	mutate(&cfg)
	open := make(chan struct{})
	close(open)
	q := &gatedQueue{gate: open, q: map[string][]jsm.Entry{}}
	srv, err := New(cfg, jsm.New(jcfg, jsm.State{Users: users}),
		Stores{Accounts: onePassword{}, Queue: q, Rosters: noRosters{}, PushRegistrations: noRegs{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-served })
	return srv, q
}

// H7, RFC 6120 §4.9.3.19: a user who lives on another node is sent there
// after SASL success in the stream the client restarts: our header, then
// the error, then the end of the stream; no features.
func TestSeeOtherHostAfterRestart(t *testing.T) {
	const there = "127.0.0.1:5999"
	srv := redirectRouter(t, there)
	c := xmpptest.Dial(t, srv.Addr("c2s"), "localhost")
	c.StartTLS()
	if cond := c.AuthPlain("alice", "pw"); cond != "" {
		t.Fatalf("auth: %s", cond)
	}
	// AuthPlain has restarted the stream and read the server's header.
	if c.Features != nil {
		t.Fatalf("features after the restart: %s", c.Features)
	}
	if cond, addr := c.StreamErrorContent(); cond != "see-other-host" || addr != there {
		t.Fatalf("after the restart: %q %q, want see-other-host %q", cond, addr, there)
	}
	if !c.Closed() {
		t.Fatal("the stream stayed open after see-other-host")
	}
	// A user who lives here logs in as ever.
	xmpptest.Login(t, srv.Addr("c2s"), "localhost", "bob", "pw", "desk")
}

// H7: the 'from' of a stream header under TLS names a user who lives
// elsewhere: the redirect comes before SASL. In the clear, or for a user
// of this node or another domain, negotiation goes on.
func TestSeeOtherHostClaimedFrom(t *testing.T) {
	const there = "127.0.0.1:5999"
	srv := redirectRouter(t, there)
	c := xmpptest.DialAs(t, srv.Addr("c2s"), "localhost", "alice@localhost/phone")
	if c.Features == nil || c.Features.Child(stanza.NSTLS, "starttls") == nil {
		t.Fatalf("in the clear: %v, want features with starttls", c.Features)
	}
	c.StartTLS()
	if c.Features != nil {
		t.Fatalf("under TLS: features %s, want see-other-host", c.Features)
	}
	if cond, addr := c.StreamErrorContent(); cond != "see-other-host" || addr != there {
		t.Fatalf("under TLS: %q %q, want see-other-host %q", cond, addr, there)
	}
	for _, from := range []string{"bob@localhost", "alice@elsewhere.test", "localhost", "not a jid@"} {
		c := xmpptest.DialAs(t, srv.Addr("c2s"), "localhost", from)
		c.StartTLS()
		if c.Features == nil || c.Features.Child(stanza.NSSASL, "mechanisms") == nil {
			t.Errorf("from %q under TLS: %v, want the SASL features", from, c.Features)
		}
	}
}

// H4, H7: a bound stream moved away (Forget, Release) ends with a
// well-formed see-other-host in the stream that is open.
func TestSeeOtherHostOnBoundStream(t *testing.T) {
	const there = "127.0.0.1:5998"
	srv := redirectRouter(t, "127.0.0.1:5999")
	bob := xmpptest.Login(t, srv.Addr("c2s"), "localhost", "bob", "pw", "desk")
	carol := xmpptest.Login(t, srv.Addr("c2s"), "localhost", "carol", "pw", "desk")
	of := func(user string) func(string) bool {
		return func(dev string) bool { return strings.HasPrefix(dev, user+"@") }
	}
	// The bind result is written before the stream is registered.
	waitUntil(t, "bob and carol bound", func() bool {
		return len(srv.Devices(jid.MustParse("bob@localhost"))) == 1 && len(srv.Devices(jid.MustParse("carol@localhost"))) == 1
	})
	if n := srv.Forget(of("bob"), there); n != 1 {
		t.Fatalf("Forget took %d devices, want 1", n)
	}
	srv.Release(of("carol"), there)
	for name, c := range map[string]*xmpptest.Client{"Forget": bob, "Release": carol} {
		if cond, addr := c.StreamErrorContent(); cond != "see-other-host" || addr != there {
			t.Errorf("%s: %q %q, want see-other-host %q", name, cond, addr, there)
		}
		if !c.Closed() {
			t.Errorf("%s: the stream stayed open", name)
		}
	}
}
