package main

import (
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"pushd/internal/apnstest"
	"pushd/internal/peertest"
)

// Issue 4, P5: `pushd serve` as a process sends a push, the APNS server
// holds it without answering, pushd is killed with SIGKILL. After a
// restart the same push (same apns-id: the tracking id) goes out once more,
// is answered 200, and nothing else is sent.
func TestKill9ResendsUnansweredPushOnce(t *testing.T) {
	peertest.RequirePeer(t, peertest.PeerSlixmpp)
	srv := testAPNS(t)
	// First request held far past the test; every later one answered 200.
	srv.Script(tokAlice, apnstest.Answer{Delay: 10 * time.Minute})

	n := newProcNode(t)
	f, err := os.OpenFile(n.cfgFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(srv.section())
	_ = f.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob"} {
		if _, err := runCmd(t, u+"-pw\n", "user", "add", "--config", n.cfgFile, u); err != nil {
			t.Fatal(err)
		}
	}
	n.start()
	args := func(user string, extra ...string) []string {
		return append(append(peertest.ServerArgs(t, n.c2s, "localhost"),
			"--user", user+"@localhost", "--password", user+"-pw", "--component", "push.localhost"), extra...)
	}
	reg := peertest.Slixmpp(t, "register.py", args("alice", "--token", tokAlice, "--device-id", "phone-1")...)
	if reg.String("status") != "completed" || !reg.Bool("enabled") || !reg.Bool("hibernated") {
		t.Fatalf("registration: %v", reg)
	}
	peertest.Slixmpp(t, "register.py", args("bob", "--mode", "send", "--to", "alice@localhost", "--body", "before the crash")...)

	first := srv.WaitRequests(1, 20*time.Second)
	if len(first) != 1 || first[0].ApnsID == "" {
		t.Fatalf("before the kill: %d APNS requests %+v", len(first), first)
	}
	tid := first[0].ApnsID
	if err := n.proc.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-n.proc.Done()
	if got := len(srv.Requests()); got != 1 {
		t.Fatalf("%d APNS requests before the restart, want 1 (held)", got)
	}

	n.start()
	reqs := srv.WaitRequests(2, 30*time.Second)
	if len(reqs) < 2 {
		t.Fatalf("no resend after the restart: %d requests", len(reqs))
	}
	if r := reqs[1]; r.ApnsID != tid || r.Token != tokAlice || r.Status != http.StatusOK {
		t.Fatalf("resend: apns-id %s (want %s) token %s status %d", r.ApnsID, tid, r.Token, r.Status)
	}
	// The dispatcher has nothing left: the resend's answer was recorded.
	waitFor(t, "dispatcher idle", 20*time.Second, func() bool {
		v, ok, err := readMetric(n.admin, "pushd_dispatch_pending")
		return err == nil && ok && v == 0
	})
	for i, r := range srv.Requests() {
		if i >= 2 {
			t.Errorf("extra APNS request %d after the resend: apns-id %s token %s", i+1, r.ApnsID, r.Token)
		}
	}
}
