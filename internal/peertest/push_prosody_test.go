package peertest

import (
	"context"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"
)

// XEP-0357 scenarios against Prosody 0.12 + mod_cloud_notify: they prove
// appserver.py and pushclient.py, and record what Prosody publishes in
// testdata/peers/prosody_publish.golden.json (go test -run
// TestPushProsody -update ./internal/peertest) so pushd's publish can be
// compared with it (ShapeOf, LoadPublishGolden, DiffShapes).

var update = flag.Bool("update", false, "rewrite golden files")

const (
	pushDomain = "push.example.test"
	pushSecret = "component-secret"
	aliceNode  = "node-alice-1"
	aliceSec   = "push-secret-alice"
)

type pushWorld struct {
	s          *ProsodyServer
	app        *AppServer
	alice, bob *PushClient
}

// pushSetup starts Prosody, the app server (in mode) and two logged-in
// clients; alice (resource "phone") has push enabled toward the app server.
func pushSetup(t *testing.T, mode string) *pushWorld {
	t.Helper()
	RequirePeer(t, PeerCloudNotify)
	RequirePeer(t, PeerSlixmpp)
	s := Prosody(t, ProsodyPushOptions(ProsodyComponent{Domain: pushDomain, Secret: pushSecret},
		map[string]string{"alice": alicePW, "bob": bobPW}))
	w := &pushWorld{s: s}
	w.app = StartAppServer(t, AppServerOptions{Addr: s.ComponentAddr, Domain: pushDomain, Secret: pushSecret, Mode: mode})
	w.alice = StartPushClient(t, PushClientOptions{Addr: s.Addr, Domain: s.Domain, JID: s.JID("alice"), Password: alicePW})
	w.bob = StartPushClient(t, PushClientOptions{Addr: s.Addr, Domain: s.Domain, JID: s.JID("bob"), Password: bobPW})
	must(t, w.app.WaitConnected())
	jid, smID, err := w.alice.Login("phone")
	must(t, err)
	if jid != s.JID("alice")+"/phone" || smID == "" {
		t.Fatalf("alice bound %q with SM id %q", jid, smID)
	}
	_, _, err = w.bob.Login("desk")
	must(t, err)
	r, err := w.alice.Enable(pushDomain, aliceNode, aliceSec)
	must(t, err)
	if r.Type != "result" {
		t.Fatalf("enable: %+v", r)
	}
	if !strings.Contains(s.StoreData("alice", "cloud_notify"), aliceNode) {
		t.Fatalf("Prosody did not store the registration: %q", s.StoreData("alice", "cloud_notify"))
	}
	return w
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// checkPublish checks what any publish for alice must carry.
func (w *pushWorld) checkPublish(t *testing.T, p Publish, bodies []string) {
	t.Helper()
	if p.From != w.s.Domain || p.To != pushDomain || p.Node != aliceNode {
		t.Errorf("publish from %q to %q node %q", p.From, p.To, p.Node)
	}
	if p.FormType != "urn:xmpp:push:summary" {
		t.Errorf("form type %q", p.FormType)
	}
	if p.PublishOptionsFormType != "http://jabber.org/protocol/pubsub#publish-options" || p.Option("secret") != aliceSec {
		t.Errorf("publish-options %q secret %q", p.PublishOptionsFormType, p.Option("secret"))
	}
	if p.Value("message-count") == "" {
		t.Errorf("no message-count: %v", p.FieldVars())
	}
	if !strings.HasPrefix(p.Value("last-message-sender"), w.s.JID("bob")) {
		t.Errorf("last-message-sender %q", p.Value("last-message-sender"))
	}
	if !slices.Contains(bodies, p.Value("last-message-body")) {
		t.Errorf("last-message-body %q not one of %q", p.Value("last-message-body"), bodies)
	}
}

// TestPushProsody: alice enables push and drops TCP; bob sends 3
// messages; the app server gets publish(es) for alice's node with her
// secret and a summary; alice resumes and gets the 3 messages in order,
// once; no publish after she is back.
func TestPushProsody(t *testing.T) {
	t.Parallel()
	w := pushSetup(t, AppServerOK)
	must(t, w.alice.Drop())
	bodies := []string{"push 1", "push 2", "push 3"}
	for _, b := range bodies {
		must(t, w.bob.Send(w.s.JID("alice"), b))
	}
	p, err := w.app.Next(15 * time.Second)
	must(t, err)
	w.checkPublish(t, p, bodies)
	if p.Answer != "result" {
		t.Errorf("answer %q", p.Answer)
	}

	resumed, err := w.alice.Resume()
	must(t, err)
	if !resumed {
		t.Fatal("alice's stream was not resumed")
	}
	m, err := w.alice.WaitMessages(3, 10*time.Second)
	must(t, err)
	if !slices.Equal(m.Bodies, bodies) || len(m.Duplicates) > 0 {
		t.Errorf("alice got %q (duplicates %q), want %q", m.Bodies, m.Duplicates, bodies)
	}
	for _, p := range w.app.All()[1:] { // Prosody may split the 3 in 2 pushes
		w.checkPublish(t, p, bodies)
	}
	// Prosody pushes at most once per second per session; 2 s covers it.
	n := len(w.app.All())
	must(t, w.bob.Send(w.s.JID("alice"), "while back"))
	must(t, w.app.ExpectNone(2*time.Second))
	if m, err := w.alice.WaitMessages(1, 10*time.Second); err != nil || !slices.Equal(m.Bodies, []string{"while back"}) {
		t.Errorf("after resuming alice got %q (%v)", m.Bodies, err)
	}
	t.Logf("Prosody sent %d publish(es) for 3 messages", n)

	shape, err := ShapeOf(p, PushPlaceholders(w.s.Domain, pushDomain, aliceNode, aliceSec, w.s.JID("bob")+"/desk", bodies...))
	must(t, err)
	golden := ProsodyPublishGolden(RepoRoot(t))
	if *update {
		must(t, WritePublishGolden(golden, PublishGolden{
			Comment: "What Prosody 0.12 + mod_cloud_notify publishes for a message to a hibernated session " +
				"(push_notification_with_body/_with_sender = true). Regenerate: go test ./internal/peertest -run TestPushProsody -update. " +
				"Compare with peertest.ShapeOf + DiffShapes using the same placeholders.",
			Server:  "prosody 0.12 + mod_cloud_notify",
			Publish: shape,
		}))
		t.Logf("wrote %s", golden)
		return
	}
	g, err := LoadPublishGolden(golden)
	must(t, err)
	if d := DiffShapes(g.Publish, shape); len(d) > 0 {
		t.Errorf("Prosody's publish differs from %s (run with -update if intended):\n%s", golden, strings.Join(d, "\n"))
	}
}

// waitStore waits (bounded) until cond holds for alice's cloud_notify
// store, i.e. until Prosody has acted on the app server's answer.
func (w *pushWorld) waitStore(t *testing.T, what string, cond func(string) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond(w.s.StoreData("alice", "cloud_notify")) {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: store is %q", what, w.s.StoreData("alice", "cloud_notify"))
		case <-tick.C:
		}
	}
}

// TestPushProsodyCancel: the app server answers cancel/item-not-found;
// with push_max_errors = 1 Prosody removes alice's registration and sends
// no publish for the next message.
func TestPushProsodyCancel(t *testing.T) {
	t.Parallel()
	w := pushSetup(t, AppServerCancel)
	must(t, w.alice.Drop())
	must(t, w.bob.Send(w.s.JID("alice"), "cancel 1"))
	p, err := w.app.Next(15 * time.Second)
	must(t, err)
	w.checkPublish(t, p, []string{"cancel 1"})
	if p.Answer != "cancel" {
		t.Fatalf("answer %q", p.Answer)
	}
	w.waitStore(t, "registration not removed after cancel", func(s string) bool { return !strings.Contains(s, aliceNode) })
	must(t, w.bob.Send(w.s.JID("alice"), "cancel 2"))
	must(t, w.app.ExpectNone(3*time.Second))

	resumed, err := w.alice.Resume()
	must(t, err)
	if !resumed {
		t.Fatal("not resumed")
	}
	m, err := w.alice.WaitMessages(2, 10*time.Second)
	must(t, err)
	if !slices.Equal(m.Bodies, []string{"cancel 1", "cancel 2"}) {
		t.Errorf("alice got %q", m.Bodies)
	}
}

// TestPushProsodyWait: the app server answers wait/resource-constraint.
// Prosody neither retries that publish nor counts the error: the
// registration stays and the next message is pushed again.
func TestPushProsodyWait(t *testing.T) {
	t.Parallel()
	w := pushSetup(t, AppServerWait)
	must(t, w.alice.Drop())
	must(t, w.bob.Send(w.s.JID("alice"), "wait 1"))
	p, err := w.app.Next(15 * time.Second)
	must(t, err)
	w.checkPublish(t, p, []string{"wait 1"})
	if p.Answer != "wait" {
		t.Fatalf("answer %q", p.Answer)
	}
	// No retry of the refused publish (Prosody has no retry at all).
	must(t, w.app.ExpectNone(3*time.Second))
	if !strings.Contains(w.s.StoreData("alice", "cloud_notify"), aliceNode) {
		t.Fatal("registration removed after a wait error")
	}
	must(t, w.app.SetMode(AppServerOK))
	must(t, w.bob.Send(w.s.JID("alice"), "wait 2"))
	p, err = w.app.Next(15 * time.Second)
	must(t, err)
	w.checkPublish(t, p, []string{"wait 2"})
	if p.Answer != "result" {
		t.Errorf("second answer %q", p.Answer)
	}
	resumed, err := w.alice.Resume()
	must(t, err)
	if !resumed {
		t.Fatal("not resumed")
	}
	m, err := w.alice.WaitMessages(2, 10*time.Second)
	must(t, err)
	if !slices.Equal(m.Bodies, []string{"wait 1", "wait 2"}) {
		t.Errorf("alice got %q", m.Bodies)
	}
}

// waitPresence collects alice's presences until one from `from` (prefix)
// with type typ and show arrives, or fails after 10 s.
func waitPresence(t *testing.T, c *PushClient, from, typ, show string) PresenceInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var seen []PresenceInfo
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no presence from %s type %s show %q; saw %+v", from, typ, show, seen)
		}
		ps, err := c.Presences(1, left)
		if err != nil && len(ps) == 0 {
			continue
		}
		for _, p := range ps {
			if strings.HasPrefix(p.From, from) && p.Type == typ && p.Show == show {
				return p
			}
		}
		seen = append(seen, ps...)
	}
}

// TestPushClientProsody exercises the remaining pushclient.py commands and
// appserver.py's disco against Prosody, and records two Prosody behaviours
// pushd deliberately does not share: a clean logout keeps the push
// registration (M8 removes it), so a message to the offline user is still
// pushed; disable removes it.
func TestPushClientProsody(t *testing.T) {
	t.Parallel()
	w := pushSetup(t, AppServerOK)
	alice, bob, s := w.alice, w.bob, w.s

	ids, feats, err := alice.DiscoInfo(pushDomain, "")
	must(t, err)
	if !slices.Contains(feats, "urn:xmpp:push:0") || len(ids) != 1 || ids[0].Category != "pubsub" || ids[0].Type != "push" {
		t.Errorf("app server disco: %+v %q", ids, feats)
	}

	// Subscriptions both ways, then a presence update seen by alice.
	must(t, alice.SetAutoApprove(true))
	must(t, bob.SetAutoApprove(true))
	must(t, alice.Subscribe(s.JID("bob")))
	waitPresence(t, alice, s.JID("bob"), "available", "")
	// bob's presence (sent on his approval) may come before his own
	// request is approved by alice's client: the roster says both a
	// moment later.
	var roster map[string]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		roster, err = alice.Roster()
		must(t, err)
		if roster[s.JID("bob")] == "both" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if roster[s.JID("bob")] != "both" {
		t.Errorf("alice's roster: %v", roster)
	}
	must(t, bob.Presence("away", "in a meeting"))
	if p := waitPresence(t, alice, s.JID("bob"), "available", "away"); p.Status != "in a meeting" {
		t.Errorf("status %q", p.Status)
	}

	// CSI nonzas are accepted (Prosody 0.12 without mod_csi_simple holds
	// nothing back, so no push either).
	must(t, alice.Inactive())
	must(t, bob.Send(s.JID("alice"), "while inactive"))
	if m, err := alice.WaitMessages(1, 10*time.Second); err != nil || m.Bodies[0] != "while inactive" {
		t.Errorf("inactive alice got %q (%v)", m.Bodies, err)
	}
	must(t, alice.Active())
	must(t, w.app.ExpectNone(1500*time.Millisecond))

	// Clean logout: Prosody keeps the registration and pushes the offline
	// message.
	must(t, alice.Logout())
	if !strings.Contains(s.StoreData("alice", "cloud_notify"), aliceNode) {
		t.Errorf("Prosody dropped the registration on logout")
	}
	must(t, bob.Send(s.JID("alice"), "offline 1"))
	p, err := w.app.Next(10 * time.Second)
	must(t, err)
	w.checkPublish(t, p, []string{"offline 1"})

	// Back (new session, offline message delivered), then disable.
	_, _, err = alice.Login("phone")
	must(t, err)
	if m, err := alice.WaitMessages(1, 10*time.Second); err != nil || !slices.Equal(m.Bodies, []string{"offline 1"}) {
		t.Errorf("after login alice got %q (%v)", m.Bodies, err)
	}
	r, err := alice.Disable(pushDomain, aliceNode)
	must(t, err)
	if r.Type != "result" || strings.Contains(s.StoreData("alice", "cloud_notify"), aliceNode) {
		t.Errorf("disable: %+v, store %q", r, s.StoreData("alice", "cloud_notify"))
	}
	must(t, alice.Drop())
	must(t, bob.Send(s.JID("alice"), "after disable"))
	must(t, w.app.ExpectNone(2*time.Second))

	// Rebind the same resource on a new stream (not a resumption).
	jid, _, err := alice.Rebind("phone")
	must(t, err)
	if jid != s.JID("alice")+"/phone" {
		t.Errorf("rebound as %q", jid)
	}
	m, err := alice.WaitMessages(1, 10*time.Second)
	t.Logf("after rebind Prosody delivered %q (%v)", m.Bodies, err)
	must(t, alice.Quit())
}
