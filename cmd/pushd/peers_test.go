package main

import (
	"net"
	"slices"
	"testing"

	"pushd/internal/peertest"
)

// Real clients against a real node: slixmpp and @xmpp/client log in over
// STARTTLS with SCRAM-SHA-256, subscribe, chat, and resume a dropped
// stream (issue 2; BEHAVIOUR S1, M5).

func TestSlixmppChat(t *testing.T) {
	n := startTestNode(t, nil)
	alice, bob := n.addUser("alice", "alice-pw"), n.addUser("bob", "bob-pw")
	res := peertest.Slixmpp(t, "chat.py", append(peertest.ServerArgs(t, n.c2s(), n.cfg.Domain),
		"--alice", alice, "--alice-password", "alice-pw", "--bob", bob, "--bob-password", "bob-pw", "--messages", "3")...)
	if !res.Bool("ok") || !res.Bool("subscribed") {
		t.Fatalf("chat failed: %v", res)
	}
	for _, side := range []string{"alice", "bob"} {
		r := res.Sub(side)
		if r.String("mech") != "SCRAM-SHA-256" || !r.Bool("tls") {
			t.Errorf("%s logged in with %q, tls=%v", side, r.String("mech"), r.Bool("tls"))
		}
	}
	if got, want := res.Sub("alice").Strings("bodies"), []string{"b2a 0", "b2a 1", "b2a 2"}; !slices.Equal(got, want) {
		t.Errorf("alice got %v, want %v", got, want)
	}
	if got := res.Sub("bob").Sub("roster").String(alice); got != "both" {
		t.Errorf("bob's roster has alice as %q, want both", got)
	}
}

func TestSlixmppResume(t *testing.T) {
	n := startTestNode(t, nil)
	alice, bob := n.addUser("alice", "alice-pw"), n.addUser("bob", "bob-pw")
	res := peertest.Slixmpp(t, "resume.py", append(peertest.ServerArgs(t, n.c2s(), n.cfg.Domain),
		"--alice", alice, "--alice-password", "alice-pw", "--bob", bob, "--bob-password", "bob-pw", "--messages", "10")...)
	checkResume(t, res)
}

func checkResume(t *testing.T, res peertest.Result) {
	t.Helper()
	if !res.Bool("resumed") || res.Bool("new_session") {
		t.Fatalf("stream was not resumed: %v", res)
	}
	if l := res.Strings("lost"); len(l) > 0 {
		t.Errorf("lost: %v", l)
	}
	if d := res.Strings("duplicates"); len(d) > 0 {
		t.Errorf("delivered twice: %v", d)
	}
	if got, want := res.Strings("after"), res.Strings("expected"); !slices.Equal(got, want) || len(want) == 0 {
		t.Errorf("after resuming got %v, want %v in order", got, want)
	}
}

func TestSlixmppComponent(t *testing.T) {
	n := startTestNode(t, func(c *fileConfig) {
		c.Component.Accept = append(c.Component.Accept, componentAccept{Domain: "echo.localhost", Secret: "s3cret"})
	})
	alice := n.addUser("alice", "alice-pw")
	res := peertest.Slixmpp(t, "component.py", append(peertest.ServerArgs(t, n.c2s(), n.cfg.Domain),
		"--component-port", port(t, n.router.Addr("component")), "--component", "echo.localhost", "--secret", "s3cret",
		"--user", alice, "--password", "alice-pw", "--messages", "3")...)
	if got, want := res.Strings("client_received"), []string{"echo: hello 0", "echo: hello 1", "echo: hello 2"}; !slices.Equal(got, want) {
		t.Fatalf("client got %v, want %v (%v)", got, want, res)
	}
	if res.String("from") != "echo.localhost" {
		t.Errorf("answer from %q", res.String("from"))
	}
}

func TestSlixmppComponentWrongSecret(t *testing.T) {
	n := startTestNode(t, func(c *fileConfig) {
		c.Component.Accept = append(c.Component.Accept, componentAccept{Domain: "echo.localhost", Secret: "s3cret"})
	})
	res := peertest.Slixmpp(t, "component.py", append(peertest.ServerArgs(t, n.c2s(), n.cfg.Domain),
		"--component-port", port(t, n.router.Addr("component")), "--component", "echo.localhost", "--secret", "not-it",
		"--mode", "wrong-secret")...)
	if res.Bool("session_started") || res.String("stream_error") != "not-authorized" || !res.Bool("disconnected") {
		t.Fatalf("wrong secret: %v", res)
	}
}

func TestXMPPJSChat(t *testing.T) {
	n := startTestNode(t, nil)
	alice, bob := n.addUser("alice", "alice-pw"), n.addUser("bob", "bob-pw")
	res := peertest.Node(t, "chat.mjs", append(peertest.ServerArgs(t, n.c2s(), n.cfg.Domain),
		"--alice", alice, "--alice-password", "alice-pw", "--bob", bob, "--bob-password", "bob-pw", "--messages", "3")...)
	a, b := res.Sub("alice"), res.Sub("bob")
	if got, want := a.Strings("bodies"), []string{"b2a 0", "b2a 1", "b2a 2"}; !slices.Equal(got, want) {
		t.Errorf("alice got %v, want %v", got, want)
	}
	if got, want := b.Strings("bodies"), []string{"a2b 0", "a2b 1", "a2b 2"}; !slices.Equal(got, want) {
		t.Errorf("bob got %v, want %v", got, want)
	}
	if a.String("mech") != "SCRAM-SHA-256" || !a.Bool("tls") {
		t.Errorf("alice logged in with %q, tls=%v", a.String("mech"), a.Bool("tls"))
	}
	if a.Sub("roster").String(bob) != "both" || b.Sub("roster").String(alice) != "both" {
		t.Errorf("rosters: alice %v, bob %v", a.Sub("roster"), b.Sub("roster"))
	}
}

func TestXMPPJSResume(t *testing.T) {
	n := startTestNode(t, nil)
	alice, bob := n.addUser("alice", "alice-pw"), n.addUser("bob", "bob-pw")
	res := peertest.Node(t, "resume.mjs", append(peertest.ServerArgs(t, n.c2s(), n.cfg.Domain),
		"--alice", alice, "--alice-password", "alice-pw", "--bob", bob, "--bob-password", "bob-pw", "--messages", "10")...)
	checkResume(t, res)
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
