package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"pushd/internal/peertest"
)

const (
	appDomain = "push.example.test"
	appSecret = "app-server-secret"
	aliceNode = "node-alice-1"
	aliceSec  = "push-secret-alice"
)

type suspendWorld struct {
	n          *testNode
	app        *peertest.AppServer
	alice, bob *peertest.PushClient
	bobJID     string
}

// suspendSetup: a node with a foreign app server (slixmpp over XEP-0114),
// alice's phone with push enabled toward it, bob at his desk, subscribed
// to each other.
func suspendSetup(t *testing.T, mutate func(*fileConfig)) *suspendWorld {
	t.Helper()
	n := startTestNode(t, func(c *fileConfig) {
		c.Component.Accept = append(c.Component.Accept, componentAccept{Domain: appDomain, Secret: appSecret})
		c.PushTriggers.IncludeBody, c.PushTriggers.IncludeSender = true, true
		if mutate != nil {
			mutate(c)
		}
	})
	alice, bob := n.addUser("alice", alicePW), n.addUser("bob", bobPW)
	w := &suspendWorld{n: n, bobJID: bob}
	w.app = peertest.StartAppServer(t, peertest.AppServerOptions{Addr: n.router.Addr("component"), Domain: appDomain, Secret: appSecret, Mode: peertest.AppServerOK})
	w.alice = peertest.StartPushClient(t, peertest.PushClientOptions{Addr: n.c2s(), Domain: "localhost", JID: alice, Password: alicePW, AutoApprove: true})
	w.bob = peertest.StartPushClient(t, peertest.PushClientOptions{Addr: n.c2s(), Domain: "localhost", JID: bob, Password: bobPW, AutoApprove: true})
	check(t, w.app.WaitConnected())
	_, _, err := w.alice.Login("phone")
	check(t, err)
	_, _, err = w.bob.Login("desk")
	check(t, err)
	check(t, w.bob.Subscribe(alice))
	check(t, w.alice.Subscribe(bob))
	check(t, w.bob.Ping())
	r, err := w.alice.Enable(appDomain, aliceNode, aliceSec)
	check(t, err)
	if r.Type != "result" {
		t.Fatalf("enable: %+v", r)
	}
	return w
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Issue 3's main scenario (M2, M3, M4, M5): alice's phone drops; bob
// sends 3 messages and a presence update; the app server gets a publish
// for alice's node with her secret and a summary; bob sees alice away;
// alice resumes and gets the 3 messages in order, then the presence, each
// once; no publish after she is back.
func TestSuspendedResume(t *testing.T) {
	w := suspendSetup(t, nil)
	_, _ = w.bob.Presences(0, 0) // forget what came before
	check(t, w.alice.Drop())
	bodies := []string{"push 1", "push 2", "push 3"}
	for _, b := range bodies {
		check(t, w.bob.Send("alice@localhost", b))
	}
	check(t, w.bob.Presence("dnd", "in a meeting"))

	p, err := w.app.Next(15 * time.Second)
	check(t, err)
	if p.From != "alice@localhost" || p.To != appDomain || p.Node != aliceNode || p.Option("secret") != aliceSec {
		t.Errorf("publish from %q to %q node %q secret %q", p.From, p.To, p.Node, p.Option("secret"))
	}
	if p.FormType != "urn:xmpp:push:summary" || p.Value("message-count") == "" || !slices.Contains(bodies, p.Value("last-message-body")) ||
		!strings.HasPrefix(p.Value("last-message-sender"), "bob@localhost") {
		t.Errorf("summary: %v", p.Fields)
	}
	// M4: while her only device is suspended, bob sees alice away.
	pres, err := w.bob.Presences(1, 10*time.Second)
	check(t, err)
	if !hasPresence(pres, "alice@localhost", "away") {
		t.Errorf("bob did not see alice away: %+v", pres)
	}

	resumed, err := w.alice.Resume()
	check(t, err)
	if !resumed {
		t.Fatal("not resumed")
	}
	m, err := w.alice.WaitMessages(3, 10*time.Second)
	check(t, err)
	if !slices.Equal(m.Bodies, bodies) || len(m.Duplicates) > 0 {
		t.Fatalf("alice got %q (duplicates %q), want %q once, in order", m.Bodies, m.Duplicates, bodies)
	}
	ap, err := w.alice.Presences(1, 10*time.Second)
	check(t, err)
	if !hasPresence(ap, "bob@localhost", "dnd") {
		t.Errorf("alice did not get bob's queued presence: %+v", ap)
	}
	// M5: she is back — her own presence returns, and no more publishes.
	pres, err = w.bob.Presences(1, 10*time.Second)
	check(t, err)
	if !hasPresence(pres, "alice@localhost", "") {
		t.Errorf("bob did not see alice back: %+v", pres)
	}
	before := len(w.app.All())
	check(t, w.bob.Send("alice@localhost", "while back"))
	if m, err := w.alice.WaitMessages(1, 10*time.Second); err != nil || !slices.Equal(m.Bodies, []string{"while back"}) {
		t.Errorf("live message: %q %v", m.Bodies, err)
	}
	// Coalescing is 2 s: a publish for "while back" would have been sent at once.
	check(t, w.app.ExpectNone(500*time.Millisecond))
	if len(w.app.All()) != before {
		t.Errorf("publishes after alice came back: %d", len(w.app.All())-before)
	}
}

// M5 by a new stream binding the same resource: the queue is flushed
// before anything newer.
func TestSuspendedRebind(t *testing.T) {
	w := suspendSetup(t, nil)
	check(t, w.alice.Drop())
	for _, b := range []string{"q1", "q2"} {
		check(t, w.bob.Send("alice@localhost", b))
	}
	_, err := w.app.Next(15 * time.Second)
	check(t, err)
	_, _, err = w.alice.Rebind("phone")
	check(t, err)
	check(t, w.bob.Send("alice@localhost/phone", "new"))
	m, err := w.alice.WaitMessages(3, 10*time.Second)
	check(t, err)
	if !slices.Equal(m.Bodies, []string{"q1", "q2", "new"}) || len(m.Duplicates) > 0 {
		t.Fatalf("after rebinding alice got %q (duplicates %q)", m.Bodies, m.Duplicates)
	}
}

// The publish carries the same form fields (names, types, order) and
// publish-options as Prosody 0.12 + mod_cloud_notify's, recorded in
// testdata/peers/prosody_publish.golden.json by internal/peertest, so an
// app server that works with Prosody works with pushd. pushd publishes
// from the user's bare JID as XEP-0357 shows; Prosody from the domain.
func TestPublishMatchesProsody(t *testing.T) {
	w := suspendSetup(t, nil)
	check(t, w.alice.Drop())
	check(t, w.bob.Send("alice@localhost", "shape"))
	p, err := w.app.Next(15 * time.Second)
	check(t, err)
	golden, err := peertest.LoadPublishGolden(peertest.ProsodyPublishGolden(peertest.RepoRoot(t)))
	check(t, err)
	shape, err := peertest.ShapeOf(p, peertest.PushPlaceholders("localhost", appDomain, aliceNode, aliceSec, "bob@localhost/desk", "shape"))
	check(t, err)
	want := golden.Publish
	fieldKeys := func(fs []peertest.Field) (out []string) {
		for _, f := range fs {
			out = append(out, f.Var+":"+f.Type)
		}
		return out
	}
	if got, want := fieldKeys(shape.Fields), fieldKeys(want.Fields); !slices.Equal(got, want) {
		t.Errorf("summary fields %q, Prosody's %q", got, want)
	}
	if shape.FormType != want.FormType || shape.PublishOptionsFormType != want.PublishOptionsFormType {
		t.Errorf("form types %q/%q, Prosody's %q/%q", shape.FormType, shape.PublishOptionsFormType, want.FormType, want.PublishOptionsFormType)
	}
	if got, want := fieldKeys(shape.PublishOptions), fieldKeys(want.PublishOptions); !slices.Equal(got, want) {
		t.Errorf("publish-options %q, Prosody's %q", got, want)
	}
	if !slices.Equal(shape.NotificationChildren, want.NotificationChildren) || shape.To != want.To || shape.Node != want.Node {
		t.Errorf("notification %q to %q node %q; Prosody's %q to %q node %q",
			shape.NotificationChildren, shape.To, shape.Node, want.NotificationChildren, want.To, want.Node)
	}
}

func hasPresence(list []peertest.PresenceInfo, from, show string) bool {
	for _, p := range list {
		if strings.HasPrefix(p.From, from) && p.Type == "available" && p.Show == show {
			return true
		}
	}
	return false
}
