package peertest

import (
	"fmt"
	"slices"
	"testing"
)

// These tests prove the peer scripts against Prosody 0.12; the router's
// tests run the same scripts against pushd.

const (
	alicePW = "alice-pw"
	bobPW   = "bob-pw"
)

func chatServer(t *testing.T) *ProsodyServer {
	t.Helper()
	return Prosody(t, ProsodyOptions{Users: map[string]string{"alice": alicePW, "bob": bobPW}})
}

func want(t *testing.T, what string, got, want any) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestSlixmppChatProsody(t *testing.T) {
	t.Parallel()
	s := chatServer(t)
	args := append(ServerArgs(t, s.Addr, s.Domain),
		"--alice", s.JID("alice"), "--alice-password", alicePW,
		"--bob", s.JID("bob"), "--bob-password", bobPW, "--messages", "3")
	r := Slixmpp(t, "chat.py", args...)
	a, b := r.Sub("alice"), r.Sub("bob")
	want(t, "alice bodies", a.Strings("bodies"), []string{"b2a 0", "b2a 1", "b2a 2"})
	want(t, "bob bodies", b.Strings("bodies"), []string{"a2b 0", "a2b 1", "a2b 2"})
	want(t, "alice tls", a.Bool("tls"), true)
	want(t, "alice roster", a.Sub("roster")[s.JID("bob")], "both")
	want(t, "bob roster", b.Sub("roster")[s.JID("alice")], "both")
	if !slices.Contains(a.Strings("presence_from"), s.JID("bob")) {
		t.Errorf("alice saw no presence from bob: %v", a.Strings("presence_from"))
	}
}

func TestSlixmppResumeProsody(t *testing.T) {
	t.Parallel()
	s := chatServer(t)
	args := append(ServerArgs(t, s.Addr, s.Domain),
		"--alice", s.JID("alice"), "--alice-password", alicePW,
		"--bob", s.JID("bob"), "--bob-password", bobPW, "--messages", "5")
	r := Slixmpp(t, "resume.py", args...)
	want(t, "resumed", r.Bool("resumed"), true)
	want(t, "new_session", r.Bool("new_session"), false)
	want(t, "after", r.Strings("after"), r.Strings("expected"))
	want(t, "duplicates", len(r.Strings("duplicates")), 0)
	want(t, "lost", len(r.Strings("lost")), 0)
}

func componentServer(t *testing.T) *ProsodyServer {
	t.Helper()
	return Prosody(t, ProsodyOptions{
		Users:      map[string]string{"alice": alicePW},
		Components: []ProsodyComponent{{Domain: "echo.example.test", Secret: "right-secret"}},
	})
}

func TestSlixmppComponentProsody(t *testing.T) {
	t.Parallel()
	s := componentServer(t)
	_, cport := splitAddr(t, s.ComponentAddr)
	args := append(ServerArgs(t, s.Addr, s.Domain), "--component-port", fmt.Sprint(cport),
		"--component", "echo.example.test", "--secret", "right-secret",
		"--user", s.JID("alice"), "--password", alicePW, "--messages", "3")
	r := Slixmpp(t, "component.py", args...)
	want(t, "component_received", r.Strings("component_received"), []string{"hello 0", "hello 1", "hello 2"})
	want(t, "client_received", r.Strings("client_received"), []string{"echo: hello 0", "echo: hello 1", "echo: hello 2"})
	want(t, "from", r.String("from"), "echo.example.test")
}

func TestSlixmppComponentWrongSecretProsody(t *testing.T) {
	t.Parallel()
	s := componentServer(t)
	_, cport := splitAddr(t, s.ComponentAddr)
	args := append(ServerArgs(t, s.Addr, s.Domain), "--component-port", fmt.Sprint(cport),
		"--component", "echo.example.test", "--secret", "wrong-secret", "--mode", "wrong-secret")
	r := Slixmpp(t, "component.py", args...)
	want(t, "session_started", r.Bool("session_started"), false)
	want(t, "disconnected", r.Bool("disconnected"), true)
	want(t, "stream_error", r.String("stream_error"), "not-authorized")
}

func TestNodeChatProsody(t *testing.T) {
	t.Parallel()
	s := chatServer(t)
	args := append(ServerArgs(t, s.Addr, s.Domain),
		"--alice", s.JID("alice"), "--alice-password", alicePW,
		"--bob", s.JID("bob"), "--bob-password", bobPW, "--messages", "3")
	r := Node(t, "chat.mjs", args...)
	a, b := r.Sub("alice"), r.Sub("bob")
	want(t, "alice bodies", a.Strings("bodies"), []string{"b2a 0", "b2a 1", "b2a 2"})
	want(t, "bob bodies", b.Strings("bodies"), []string{"a2b 0", "a2b 1", "a2b 2"})
	want(t, "alice mech", a.String("mech"), "SCRAM-SHA-256")
	want(t, "alice tls", a.Bool("tls"), true)
	want(t, "alice roster", a.Sub("roster")[s.JID("bob")], "both")
	want(t, "bob roster", b.Sub("roster")[s.JID("alice")], "both")
}

func TestNodeResumeProsody(t *testing.T) {
	t.Parallel()
	s := chatServer(t)
	args := append(ServerArgs(t, s.Addr, s.Domain),
		"--alice", s.JID("alice"), "--alice-password", alicePW,
		"--bob", s.JID("bob"), "--bob-password", bobPW, "--messages", "5")
	r := Node(t, "resume.mjs", args...)
	want(t, "resumed", r.Bool("resumed"), true)
	want(t, "new_session", r.Bool("new_session"), false)
	want(t, "after", r.Strings("after"), r.Strings("expected"))
	want(t, "duplicates", len(r.Strings("duplicates")), 0)
	want(t, "lost", len(r.Strings("lost")), 0)
}
