package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"pushd/component/payload"
	"pushd/internal/apnstest"
	"pushd/internal/peertest"
)

// testAPNS starts an APNS provider for the test (see apnsProvider).
func testAPNS(t *testing.T) *apnsProvider {
	t.Helper()
	p, err := newAPNSProvider(t.TempDir(), apnstest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// apnsTestServer starts an APNS test server and returns it with the
// config change that points a node's push component at it.
func apnsTestServer(t *testing.T) (*apnstest.Server, func(*fileConfig)) {
	t.Helper()
	p := testAPNS(t)
	return p.Server, func(c *fileConfig) { p.configure(&c.pushFileConfig) }
}

// startPushNode runs a node whose in-process push component talks to an
// APNS test server, as `pushd serve` does with [apns] configured.
func startPushNode(t *testing.T) (*testNode, *apnstest.Server, *syncBuffer) {
	t.Helper()
	peertest.RequirePeer(t, peertest.PeerSlixmpp)
	srv, withAPNS := apnsTestServer(t)
	logs := &syncBuffer{}
	n := startTestNodeLogging(t, logs, withAPNS)
	waitFor(t, "push component linked", 20*time.Second, func() bool { return n.push != nil && n.push.component.Connected() })
	return n, srv, logs
}

// Issue 4 with pushd's own router: a phone registers with one execute,
// enables push, hibernates; one message gives one APNS push whose payload
// only the phone's key opens (P1, P2, S2), and the log names nobody (S3).
func TestPushEndToEndOwnRouter(t *testing.T) {
	n, apns, logs := startPushNode(t)
	alice, bob := n.addUser("alice", alicePW), n.addUser("bob", bobPW)
	args := func(user, pw string, extra ...string) []string {
		return append(append(peertest.ServerArgs(t, n.c2s(), "localhost"),
			"--user", user, "--password", pw, "--component", "push.localhost"), extra...)
	}
	reg := peertest.Slixmpp(t, "register.py", args(alice, alicePW, "--token", tokAlice, "--device-id", "phone-1")...)
	if reg.String("status") != "completed" || !reg.Bool("enabled") || !reg.Bool("hibernated") {
		t.Fatalf("registration: %v", reg)
	}
	key, err := payload.KeyFromBase64(reg.String("key"))
	if err != nil {
		t.Fatal(err)
	}
	const body = "Meet me by the fountain-4411"
	peertest.Slixmpp(t, "register.py", args(bob, bobPW, "--mode", "send", "--to", alice, "--body", body)...)

	reqs := apns.WaitRequests(1, 20*time.Second)
	if len(reqs) != 1 {
		t.Fatalf("%d APNS requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Token != tokAlice || r.Topic != pushTopic || r.PushType != "alert" || r.Status != 200 {
		t.Fatalf("APNS request: token %s topic %q type %q status %d", r.Token, r.Topic, r.PushType, r.Status)
	}
	for _, clear := range []string{"bob", "alice", "fountain", "Meet me"} {
		if bytes.Contains(r.Body, []byte(clear)) {
			t.Errorf("APNS body carries %q in clear: %s", clear, r.Body)
		}
	}
	var b struct{ Enc, TID string }
	if err := json.Unmarshal(r.Body, &b); err != nil {
		t.Fatal(err)
	}
	p, err := payload.Open(key, b.Enc)
	if err != nil {
		t.Fatalf("decrypt with the phone's key: %v", err)
	}
	// pushd's own app server is trusted with sender and body: they leave
	// only inside the ciphertext.
	if p.Type != payload.TypeMessage || p.Body != body || !strings.HasPrefix(p.From, "bob@localhost") || p.Count != 1 || p.Node != n.c2s() {
		t.Fatalf("payload = %+v", p)
	}
	for _, s := range []string{"alice@", "bob@", "fountain", tokAlice, reg.String("key"), reg.String("secret")} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("log contains %q in clear", s)
		}
	}
}
