package main

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"pushd/internal/peertest"
)

// redirectCast is two nodes, alice, who lives on P, and bob, who lives on
// W: a client of alice's that connects to W is sent to P when redirect is
// set, and carried there (relayed) otherwise (H7).
func redirectCast(t *testing.T, redirect bool) (alice, bob string, P, W *testNode) {
	t.Helper()
	nodes := clusterOf(t, 2, func(_ int, c *fileConfig) { c.Cluster.Redirect = redirect })
	alice = nodes[0].addUser("alice", alicePW)
	primary := nodes[0].cluster.c.Placement().Primary(alice)
	bob, W = addBobAwayFrom(nodes, primary)
	P = byName(nodes, primary)
	waitAccount(t, nodes, alice)
	waitAccount(t, nodes, bob)
	return alice, bob, P, W
}

// checkRedirectedChat checks a chat.py / chat.mjs result in which alice
// started at W and was sent to P once (P nil: never, her stream was
// carried), and bob stayed at W.
func checkRedirectedChat(t *testing.T, res peertest.Result, P *testNode, messages ...string) {
	t.Helper()
	a, b := res.Sub("alice"), res.Sub("bob")
	var want []string
	if P != nil {
		want = []string{P.c2s()}
	}
	if got := a.Strings("redirects"); !slices.Equal(got, want) {
		t.Errorf("alice was redirected to %q, want %q", got, want)
	}
	if got := b.Strings("redirects"); len(got) != 0 {
		t.Errorf("bob was redirected to %q, want none", got)
	}
	var toAlice, toBob []string
	for _, m := range messages {
		toAlice, toBob = append(toAlice, "b2a "+m), append(toBob, "a2b "+m)
	}
	if got := a.Strings("bodies"); !slices.Equal(got, toAlice) {
		t.Errorf("alice got %v, want %v", got, toAlice)
	}
	if got := b.Strings("bodies"); !slices.Equal(got, toBob) {
		t.Errorf("bob got %v, want %v", got, toBob)
	}
	if !a.Bool("tls") || a.String("mech") != "SCRAM-SHA-256" {
		t.Errorf("alice logged in with %q, tls=%v", a.String("mech"), a.Bool("tls"))
	}
}

// runPeer runs script (chat or resume) with peer (slixmpp or @xmpp/client)
// for alice and bob, both connecting to addr.
func runPeer(t *testing.T, peer, script, addr, alice, bob string, extra ...string) peertest.Result {
	t.Helper()
	args := append(peertest.ServerArgs(t, addr, "localhost"),
		"--alice", alice, "--alice-password", alicePW, "--bob", bob, "--bob-password", bobPW)
	if peer == "slixmpp" {
		return peertest.Slixmpp(t, script+".py", append(args, extra...)...)
	}
	return peertest.Node(t, script+".mjs", append(args, extra...)...)
}

// H7 with [cluster] redirect, slixmpp 1.8.3 and @xmpp/client 0.14: alice
// connects to a node that is not her primary, follows see-other-host
// (sent in the stream restarted after SASL), logs in at her primary and
// chats with bob across the nodes.
func TestSeeOtherHostPeers(t *testing.T) {
	for _, peer := range []string{"slixmpp", "xmppjs"} {
		t.Run(peer, func(t *testing.T) {
			alice, bob, P, W := redirectCast(t, true)
			res := runPeer(t, peer, "chat", W.c2s(), alice, bob, "--messages", "2")
			if !res.Bool("ok") {
				t.Fatalf("chat failed: %v", res)
			}
			checkRedirectedChat(t, res, P, "0", "1")
		})
	}
}

// H7 with slixmpp and @xmpp/client, by default: alice connects to a node
// that is not her primary and is served there, her stream carried to her
// primary; she chats with bob, who lives on the node she reached, then
// her connection is cut and she resumes her XEP-0198 stream through that
// node, getting what bob sent meanwhile once, in order (M5, H4).
func TestAnyNodePeers(t *testing.T) {
	for _, peer := range []string{"slixmpp", "xmppjs"} {
		t.Run(peer, func(t *testing.T) {
			alice, bob, _, W := redirectCast(t, false)
			res := runPeer(t, peer, "chat", W.c2s(), alice, bob, "--messages", "2")
			if !res.Bool("ok") {
				t.Fatalf("chat failed: %v", res)
			}
			checkRedirectedChat(t, res, nil, "0", "1")
			checkResume(t, runPeer(t, peer, "resume", W.c2s(), alice, bob, "--messages", "5"))
		})
	}
}

// H7: see-other-host carries [cluster] c2s_advertise, else [c2s] listen;
// a member whose address no client can dial, or that lacks the port
// @xmpp/client needs, does not start.
func TestC2SAdvertiseChecked(t *testing.T) {
	for _, c := range []struct {
		listen, advertise string
		ok                bool
	}{
		{"127.0.0.1:5222", "", true},
		{"0.0.0.0:5222", "", false},
		{"[::]:5222", "", false},
		{"", "", false},
		{"0.0.0.0:5222", "192.0.2.2:5222", true},
		{"0.0.0.0:5222", "[2001:db8::2]:5222", true},
		{"0.0.0.0:5222", "node2.example.net:5222", true},
		{"0.0.0.0:5222", "192.0.2.2", false},
		{"0.0.0.0:5222", ":5222", false},
		{"0.0.0.0:5222", "192.0.2.2:xmpp", false},
	} {
		cfg := defaultFileConfig()
		cfg.Cluster.NodeName = "n1"
		cfg.C2S.Listen, cfg.Cluster.C2SAdvertise = c.listen, c.advertise
		cc, err := clusterConfig(cfg, "", slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if (err == nil) != c.ok {
			t.Errorf("listen %q, c2s_advertise %q: %v, want ok=%v", c.listen, c.advertise, err, c.ok)
		}
		if want := c.advertise; err == nil && want != "" && cc.Meta.C2SAddr != want {
			t.Errorf("c2s_advertise %q: meta has %q", want, cc.Meta.C2SAddr)
		}
	}
}
