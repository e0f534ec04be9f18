package main

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"pushd/cluster"
	"pushd/component/payload"
	"pushd/internal/peertest"
	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// Issue 12's cluster test (H1–H3 for calls): three pushd processes with
// SIP. Alice's phone registers at her primary; the binding reaches every
// node. The primary is killed; once the others have taken her over, a
// call arrives at the third node: it pushes her phone at once, the push
// names her new primary, the phone registers there, and the call held at
// the third node completes through it.
func TestSIPClusterFailover(t *testing.T) {
	peertest.RequirePeer(t, peertest.PeerSIPp)
	old := xmpptest.Timeout
	xmpptest.Timeout = 30 * time.Second
	t.Cleanup(func() { xmpptest.Timeout = old })
	provider := testAPNS(t)
	sipPorts := []int{peertest.FreeUDPPort(t), peertest.FreeUDPPort(t), peertest.FreeUDPPort(t)}
	procs := startClusterProcsEach(t, func(i int) string {
		return provider.section() + fmt.Sprintf("[sip]\nlisten = %q\ndigest_algorithms = [\"MD5\", \"SHA-256\"]\n", peertest.Loopback(sipPorts[i]))
	}, "n1", "n2", "n3")
	sipOf := map[string]string{}
	byName := map[string]*clusterProc{}
	for i, p := range procs {
		sipOf[p.name], byName[p.name] = peertest.Loopback(sipPorts[i]), p
	}
	waitFor(t, "three members", 30*time.Second, func() bool {
		raw, err := procs[0].admin(t).ClusterStatus()
		return err == nil && strings.Count(string(raw), `"alive"`) == 3
	})
	place := cluster.NewPlacement([]string{"n1", "n2", "n3"})
	pName, bName := place.PrimaryBackup("alice@localhost")
	third := otherThan(pName, bName)
	P, third3 := byName[pName], byName[third]
	adm := procs[0].admin(t)
	check(t, adm.AddUser("alice", alicePW))
	check(t, adm.AddUser("bob", bobPW))
	for _, p := range procs {
		waitFor(t, "accounts on "+p.name, 30*time.Second, func() bool {
			l, err := p.admin(t).ListUsers()
			return err == nil && len(l) == 2
		})
	}

	// Her app registers for push over XMPP, with the PushKit token the
	// SIP binding names, and its key.
	key := sha256.Sum256([]byte("alice's phone key"))
	a := xmpptest.Login(t, P.c2s, "localhost", "alice", alicePW, "phone")
	a.Send(`<iq type='set' to='push.localhost' id='reg'><command xmlns='http://jabber.org/protocol/commands' node='register-push-apns' action='execute'>` +
		`<x xmlns='jabber:x:data' type='submit'><field var='token'><value>` + tokAlice + `</value></field>` +
		`<field var='voip-token'><value>` + sipPhonePRID + `</value></field>` +
		`<field var='device-id'><value>phone</value></field>` +
		`<field var='key'><value>` + base64.StdEncoding.EncodeToString(key[:]) + `</value></field></x></command></iq>`)
	if res := a.Expect("registration", func(e *stanza.Element) bool { return e.Get("id") == "reg" }); res.Get("type") != "result" {
		t.Fatalf("push registration: %s", res)
	}
	_ = a.Conn.Close()

	phone := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "phone.xml", Timeout: 60 * time.Second})
	register := func(at string) {
		t.Helper()
		r := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "register.xml", Target: at,
			User: "alice", Password: alicePW, AuthURI: "localhost", Keys: map[string]string{
				"user": "alice", "domain": "localhost", "contact": peertest.Loopback(phone.Port),
				"pn": phonePN(), "cparams": phoneInstance, "expires": "600"}})
		if err := r.Wait(20 * time.Second); err != nil {
			t.Fatalf("REGISTER at %s: %v\n%s", at, err, r.Output())
		}
	}
	register(sipOf[pName])
	for _, p := range procs {
		waitFor(t, "the binding on "+p.name, 20*time.Second, func() bool { return p.metric("pushd_sip_bindings") == 1 })
	}

	check(t, P.proc.Cmd.Process.Signal(syscall.SIGKILL))
	<-P.proc.Done()
	killed := time.Now()
	waitFor(t, "alice taken over", 30*time.Second, func() bool {
		w, err := third3.admin(t).Where("alice@localhost")
		return err == nil && w.Primary == bName
	})
	t.Logf("alice taken over %v after SIGKILL", time.Since(killed).Round(10*time.Millisecond))

	caller := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "caller.xml", Target: sipOf[third],
		User: "bob", Password: bobPW, AuthURI: "alice@localhost", Keys: map[string]string{"user": "bob", "domain": "localhost", "callee": "alice"}})
	reqs := provider.WaitRequests(1, 15*time.Second)
	if len(reqs) != 1 || reqs[0].Token != sipPhonePRID || reqs[0].PushType != "voip" {
		t.Fatalf("call push: %+v", reqs)
	}
	p := openAPNSPush(t, key, reqs[0].Body)
	if p.Type != payload.TypeCall || p.Node != sipOf[bName] || p.Name != "Bob Builder" {
		t.Fatalf("call push %+v: want type call naming the new primary %s", p, sipOf[bName])
	}
	register(p.Node)
	waitAnswered(t, caller, phone, p.CallID)
}
