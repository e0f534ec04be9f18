package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"pushd/cluster"
	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

// H7 with a client that ignores see-other-host (the in-tree raw client):
// alice's phone connects to the one node that is neither her primary nor
// her backup, and is served there, her stream carried to her primary; she
// chats, hibernates, is pushed, and resumes through that node, before her
// primary is killed and after (then her stream is carried to her backup,
// which took her over).
func TestAnyNodeServesRawClient(t *testing.T) {
	fc := newFailoverCast(t, nil)
	alice, P, B, edge := fc.alice, fc.P, fc.B, fc.bobHome
	appP, appB := appAt(t, P), appAt(t, B)
	b := fc.desk(t)

	a := xmpptest.Login(t, edge.c2s(), "localhost", "alice", alicePW, "phone")
	a.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	smID := a.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") }).Get("id")
	a.Send(`<iq type='set' id='push1'><enable xmlns='urn:xmpp:push:0' jid='` + failoverApp + `' node='n1'/></iq><presence/>`)
	a.Expect("push enabled", func(e *stanza.Element) bool { return e.Get("id") == "push1" && e.Get("type") == "result" })
	if d := P.devices(t, alice); len(d) != 1 {
		t.Fatalf("alice's session on her primary: %+v, want her phone", d)
	}
	if d := edge.devices(t, alice); len(d) != 0 {
		t.Fatalf("alice's session on the node she reached: %+v, want none", d)
	}

	// Chat both ways through the node she reached.
	a.Send(fmt.Sprintf(`<message to='%s/desk' type='chat'><body>hello bob</body></message>`, fc.bob))
	b.Expect("alice's message", func(e *stanza.Element) bool { return e.ChildText(stanza.NSClient, "body") == "hello bob" })
	b.Send(fmt.Sprintf(`<message to='%s' type='chat'><body>hello alice</body></message>`, alice))
	a.Expect("bob's message", func(e *stanza.Element) bool { return e.ChildText(stanza.NSClient, "body") == "hello alice" })

	// resume has alice's phone come back through the node she reached,
	// saying she handled h stanzas, and returns the bodies it gets then.
	resume := func(h, want int) (*xmpptest.Client, []string) {
		t.Helper()
		r, el := resumeAt(t, edge, smID, h)
		if !el.Is(stanza.NSSM, "resumed") {
			t.Fatalf("M5/H4: resumption through the node she reached: %s", el)
		}
		return r, messageBodies(t, r, want)
	}
	hibernate := func(c *xmpptest.Client, on *testNode) {
		t.Helper()
		_ = c.Conn.Close()
		waitFor(t, "alice hibernating on "+on.cluster.c.Name(), 10*time.Second, func() bool {
			d := on.devices(t, alice)
			return len(d) == 1 && d[0].Detached
		})
	}
	send := func(body string) {
		t.Helper()
		b.Send(fmt.Sprintf(`<message to='%s' type='chat'><body>%s</body></message><r xmlns='urn:xmpp:sm:3'/>`, alice, body))
		b.Expect("ack of "+body, func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") })
	}

	hibernate(a, P)
	send("while away")
	if _, err := appP.Next(10 * time.Second); err != nil {
		t.Fatalf("M3: no push from her primary: %v", err)
	}
	// She acknowledged nothing: what she was written comes again, once, in
	// order, then what came while she was away.
	r, got := resume(0, 2)
	if want := []string{"hello alice", "while away"}; !slices.Equal(got, want) {
		t.Fatalf("M5: after resuming: %q, want %q", got, want)
	}

	hibernate(r, P)
	fc.crash(t, P, B)
	send("after the crash")
	if _, err := appB.Next(20 * time.Second); err != nil {
		t.Fatalf("H3: no push from her new primary: %v", err)
	}
	_, got = resume(0, 3)
	if want := []string{"hello alice", "while away", "after the crash"}; !slices.Equal(got, want) {
		t.Fatalf("H4: after resuming on her new primary through the node she reached: %q, want %q", got, want)
	}
}

// H7 when the primary dies under a live relayed stream: alice's phone,
// connected to the node that is neither her primary nor her backup, keeps
// its connection; that node resumes her stream at the backup that took
// her over, on her behalf. What bob sends her in the detection window and
// after arrives on the same connection, what she sends in the window
// reaches bob, each once and in order, and the backup's count of her
// stanzas is hers.
func TestAnyNodeCarriesStreamOn(t *testing.T) {
	fc := newFailoverCast(t, nil)
	alice, P, B, edge := fc.alice, fc.P, fc.B, fc.bobHome
	b := fc.desk(t)
	a := xmpptest.Login(t, edge.c2s(), "localhost", "alice", alicePW, "phone")
	a.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	a.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	a.Send(`<presence/>`)
	toBob := func(body string) {
		a.Send(fmt.Sprintf(`<message to='%s/desk' type='chat'><body>%s</body></message>`, fc.bob, body))
	}
	// bob reads his stream until until says stop, keeping what alice
	// sends him.
	var gotBob []string
	bobReads := func(until func(*stanza.Element) bool) {
		t.Helper()
		for {
			el, err := b.Next()
			if err != nil {
				t.Fatalf("bob, with %q: %v", gotBob, err)
			}
			if el.Is(stanza.NSClient, "message") {
				gotBob = append(gotBob, el.ChildText(stanza.NSClient, "body"))
			}
			if until(el) {
				return
			}
		}
	}
	toAlice := func(body string) {
		t.Helper()
		b.Send(fmt.Sprintf(`<message to='%s' type='chat'><body>%s</body></message><r xmlns='urn:xmpp:sm:3'/>`, alice, body))
		bobReads(func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") })
	}
	// What she sent before is acknowledged: it must not come again. (What
	// no <a/> covered may: XEP-0198 resends it, at least once.)
	toBob("before")
	a.Send(`<r xmlns='urn:xmpp:sm:3'/>`)
	if h := a.Expect("ack", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") }).Get("h"); h != "2" {
		t.Fatalf("her primary counts %s stanzas, want 2", h)
	}
	bobReads(func(*stanza.Element) bool { return slices.Contains(gotBob, "before") })
	toAlice("hello alice")
	a.ExpectBody("hello alice")

	check(t, P.cluster.c.Shutdown())
	P.stopAbruptly()
	toBob("sent in the window")
	toAlice("in the window") // acknowledged only once the backup holds it
	waitFor(t, "alice's phone carried on to "+B.cluster.c.Name(), 30*time.Second, func() bool {
		d := B.devices(t, alice)
		return len(d) == 1 && !d[0].Detached
	})
	toAlice("after the takeover")
	toBob("last")

	// Her stream: the two new messages once, nothing she had again, and
	// the count of what she sent (her presence, three messages) kept
	// across the carry.
	a.Send(`<r xmlns='urn:xmpp:sm:3'/>`)
	var got []string
	var h string
	for h == "" {
		el, err := a.Next()
		if err != nil {
			t.Fatalf("H7: alice's connection after the carry, with %q: %v", got, err)
		}
		switch {
		case el.Is(stanza.NSClient, "message"):
			got = append(got, el.ChildText(stanza.NSClient, "body"))
		case el.Is(stanza.NSSM, "a") && len(got) >= 2:
			h = el.Get("h")
		}
	}
	if want := []string{"in the window", "after the takeover"}; !slices.Equal(got, want) {
		t.Fatalf("H7/M5: alice got %q on her carried stream, want %q", got, want)
	}
	if h != "4" {
		t.Fatalf("H4: her new primary counts %s stanzas from her, want 4", h)
	}
	bobReads(func(*stanza.Element) bool { return slices.Contains(gotBob, "last") })
	if want := []string{"before", "sent in the window", "last"}; !slices.Equal(gotBob, want) {
		t.Fatalf("H7: bob got %q from alice's carried stream, want %q", gotBob, want)
	}
	if a.Closed() {
		t.Fatal("H7: alice's connection was closed")
	}
}

// H7 with slixmpp and @xmpp/client: alice (push enabled) and bob are
// connected to the node that is neither alice's primary nor her backup;
// her primary is killed while they chat, and both go on sending through
// the detection window. Her connection stays up (carried on to her
// backup); every message arrives once, in order, and all she sent is
// acknowledged. Then she hibernates, bob writes, her new primary pushes
// (M3), and she resumes through the same node (M5).
func TestAnyNodeCarriesPeers(t *testing.T) {
	for _, peer := range []string{"slixmpp", "xmppjs"} {
		t.Run(peer, func(t *testing.T) {
			fc := newFailoverCast(t, nil)
			var once sync.Once
			kill := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				once.Do(func() {
					_ = fc.P.cluster.c.Shutdown()
					fc.P.stopAbruptly()
				})
			}))
			t.Cleanup(kill.Close)
			appB := appAt(t, fc.B)
			pushed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if _, err := appB.Next(20 * time.Second); err != nil {
					http.Error(w, err.Error(), http.StatusGatewayTimeout)
				}
			}))
			t.Cleanup(pushed.Close)
			res := runPeer(t, peer, "carry", fc.bobHome.c2s(), fc.alice, fc.bob, "--kill-url", kill.URL, "--messages", "5",
				"--pushed-url", pushed.URL, "--push-jid", failoverApp, "--push-node", "n1")
			var toAlice, toBob []string
			for _, m := range []string{"before 0", "before 1", "window 0", "window 1", "window 2", "window 3", "window 4"} {
				toAlice, toBob = append(toAlice, m), append(toBob, "a "+m)
			}
			if got := res.Strings("alice"); !slices.Equal(got[:min(len(got), len(toAlice))], toAlice) {
				t.Errorf("H7: alice got %q, want %q", got, toAlice)
			}
			if got := res.Strings("bob"); !slices.Equal(got, toBob) {
				t.Errorf("H7: bob got %q, want %q", got, toBob)
			}
			if res.Bool("disconnected") {
				t.Error("H7: alice's connection dropped when her primary died")
			}
			if res.Int("acked") != res.Int("sent") {
				t.Errorf("H4: %d of alice's %d stanzas acknowledged: %v", res.Int("acked"), res.Int("sent"), res)
			}
			if !res.Bool("pushed") {
				t.Error("M3/H3: no push from her new primary while she hibernated")
			}
			if want := []string{"away 0", "away 1", "away 2", "away 3", "away 4"}; !res.Bool("resumed") || !slices.Equal(res.Strings("after"), want) {
				t.Errorf("M5: resumed %v through the node she reached, then got %q, want %q", res.Bool("resumed"), res.Strings("after"), want)
			}
			if !res.Bool("ok") {
				t.Errorf("the script failed: %v", res)
			}
		})
	}
}

// H7 across the ways a node stops serving a user, with three processes:
// alice's phone stays connected to the node that is neither her primary
// nor her backup while her primary is killed (SIGKILL: carried to her
// backup), starts again and is handed her back (see-other-host from the
// backup: carried home), then is paused past failure detection (SIGSTOP:
// the node says nothing, and the edge carries her stream on when the view
// moves her) and continues (SIGCONT: handed back once more). A message
// from bob, on the edge, reaches her after each step on the one
// connection, and each once.
func TestAnyNodeCarriesStreamProcesses(t *testing.T) {
	_, procs, byProc := threePushProcs(t)
	place := cluster.NewPlacement([]string{"n1", "n2", "n3"})
	pName, bName := place.PrimaryBackup("alice@localhost")
	P, B, E := byProc[pName], byProc[bName], byProc[otherThan(pName, bName)]
	adm := procs[0].admin(t)
	check(t, adm.AddUser("alice", "pw"))
	bob := ""
	for i := 0; bob == ""; i++ {
		if u := fmt.Sprintf("bob%d", i); place.Primary(u+"@localhost") == E.name {
			bob = u
		}
	}
	check(t, adm.AddUser(bob, "pw"))
	// Every member sees the other two and has synced: alice's session goes
	// to the backup her primary names from the first record on.
	for _, p := range procs {
		waitFor(t, "accounts and members on "+p.name, 30*time.Second, func() bool {
			l, err := p.admin(t).ListUsers()
			raw, serr := p.admin(t).ClusterStatus()
			return err == nil && len(l) == 2 && serr == nil && strings.Count(string(raw), `"alive"`) == 3 &&
				p.metric("pushd_cluster_syncing") == 0
		})
	}
	a := xmpptest.Login(t, E.c2s, "localhost", "alice", "pw", "phone")
	a.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/><presence/>`)
	a.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	b := xmpptest.Login(t, E.c2s, "localhost", bob, "pw", "desk")
	b.Send(`<enable xmlns='urn:xmpp:sm:3'/>`)
	b.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })

	// live says alice's stream is bound and attached at n, carried there.
	live := func(n *clusterProc) bool {
		return n.metric("pushd_streams_bound")-n.metric("pushd_streams_detached") == 1
	}
	var got []string
	step := func(what string, at *clusterProc) {
		t.Helper()
		waitFor(t, "alice's stream carried to "+at.name+" "+what, 60*time.Second, func() bool { return live(at) })
		b.Send(`<message to='alice@localhost' type='chat'><body>` + what + `</body></message><r xmlns='urn:xmpp:sm:3'/>`)
		b.Expect("ack of "+what, func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") })
		a.Expect(what, func(e *stanza.Element) bool {
			if e.Is(stanza.NSClient, "message") {
				got = append(got, e.ChildText(stanza.NSClient, "body"))
			}
			return slices.Contains(got, what)
		})
	}
	step("first", P)
	check(t, P.proc.Cmd.Process.Signal(syscall.SIGKILL))
	<-P.proc.Done()
	step("after the kill", B)
	P.start(t)
	step("after the restart", P)
	check(t, syscall.Kill(P.proc.PID(), syscall.SIGSTOP))
	step("during the pause", B)
	check(t, syscall.Kill(P.proc.PID(), syscall.SIGCONT))
	step("after the pause", P)

	// Nothing twice, and her stanzas (her presence) counted once.
	a.Send(`<r xmlns='urn:xmpp:sm:3'/>`)
	h := a.Expect("ack", func(e *stanza.Element) bool {
		if e.Is(stanza.NSClient, "message") {
			got = append(got, e.ChildText(stanza.NSClient, "body"))
		}
		return e.Is(stanza.NSSM, "a")
	}).Get("h")
	if want := []string{"first", "after the kill", "after the restart", "during the pause", "after the pause"}; !slices.Equal(got, want) {
		t.Fatalf("H7: alice got %q on her one connection, want %q", got, want)
	}
	if h != "1" {
		t.Fatalf("H4: her node counts %s stanzas from her, want 1", h)
	}
	if n := E.metric("pushd_streams_carried_total"); n != 4 {
		t.Errorf("the edge carried her stream on %v times, want 4", n)
	}
}

// O7, a graceful stop: alice's primary gets SIGTERM while her phone is
// connected through another node and dave's phone directly to it. The
// node leaves the cluster first, so that the others take its users over
// at once, then sends its clients where their users are served now:
// alice's connection is carried on, dave is sent (see-other-host) to his
// new primary and resumes there. What bob sent before and during the stop
// arrives once each; the node exits cleanly.
func TestGracefulStopHandsOver(t *testing.T) {
	_, procs, byProc := threePushProcs(t)
	place := cluster.NewPlacement([]string{"n1", "n2", "n3"})
	pName, bName := place.PrimaryBackup("alice@localhost")
	P, E := byProc[pName], byProc[otherThan(pName, bName)]
	pick := func(prefix, home string) string {
		for i := 0; ; i++ {
			if u := fmt.Sprintf("%s%d", prefix, i); place.Primary(u+"@localhost") == home {
				return u
			}
		}
	}
	bob, dave := pick("bob", E.name), pick("dave", pName)
	adm := procs[0].admin(t)
	for _, u := range []string{"alice", bob, dave} {
		check(t, adm.AddUser(u, "pw"))
	}
	for _, p := range procs {
		waitFor(t, "accounts and members on "+p.name, 30*time.Second, func() bool {
			l, err := p.admin(t).ListUsers()
			raw, serr := p.admin(t).ClusterStatus()
			return err == nil && len(l) == 3 && serr == nil && strings.Count(string(raw), `"alive"`) == 3 &&
				p.metric("pushd_cluster_syncing") == 0
		})
	}
	phone := func(user, at string) (*xmpptest.Client, string) {
		c := xmpptest.Login(t, at, "localhost", user, "pw", "phone")
		c.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
		return c, c.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") }).Get("id")
	}
	a, _ := phone("alice", E.c2s)
	d, davesID := phone(dave, P.c2s)
	b := xmpptest.Login(t, E.c2s, "localhost", bob, "pw", "desk")
	b.Send(`<enable xmlns='urn:xmpp:sm:3'/>`)
	b.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	send := func(body string) {
		t.Helper()
		b.Send(fmt.Sprintf(`<message to='alice@localhost/phone' type='chat'><body>%s</body></message>`+
			`<message to='%s@localhost/phone' type='chat'><body>%s</body></message><r xmlns='urn:xmpp:sm:3'/>`, body, dave, body))
		b.Expect("ack of "+body, func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") })
	}
	send("before")
	a.ExpectBody("before")
	d.ExpectBody("before")

	stopped := time.Now()
	check(t, P.proc.Cmd.Process.Signal(syscall.SIGTERM))
	send("during")
	a.ExpectBody("during")
	// dave's stream: what P wrote before it left, then see-other-host.
	got := []string{"before"} // read above
	h := 1
	var cond, to string
	for cond == "" {
		el, err := d.Next()
		if err != nil {
			t.Fatalf("O7: dave's stream ended without a stream error, after %q: %v", got, err)
		}
		switch {
		case el.Is(stanza.NSClient, "message"):
			got = append(got, el.ChildText(stanza.NSClient, "body"))
			h++
		case el.Is(stanza.NSStream, "error"):
			cond = "?"
			if c := el.Child(stanza.NSStreamErr, "see-other-host"); c != nil {
				cond, to = "see-other-host", c.Text()
			}
		}
	}
	alt := cluster.NewPlacement([]string{bName, E.name}).Primary(dave + "@localhost")
	if cond != "see-other-host" || to != byProc[alt].c2s {
		t.Fatalf("O7: dave's stream ended with %s to %q, want see-other-host to his new primary %s at %s", cond, to, alt, byProc[alt].c2s)
	}
	t.Logf("O7: dave sent to his new primary %v after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	r := xmpptest.Dial(t, to, "localhost")
	r.StartTLS()
	if c := r.AuthPlain(dave, "pw"); c != "" {
		t.Fatal(c)
	}
	r.Send(`<resume xmlns='urn:xmpp:sm:3' h='` + strconv.Itoa(h) + `' previd='` + davesID + `'/><iq type='get' id='end'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if el := r.Expect("resumed", func(e *stanza.Element) bool { return e.Name.Space == stanza.NSSM }); !el.Is(stanza.NSSM, "resumed") {
		t.Fatalf("O7/H4: dave did not resume at his new primary: %s", el)
	}
	r.Expect("ping", func(e *stanza.Element) bool {
		if e.Is(stanza.NSClient, "message") {
			got = append(got, e.ChildText(stanza.NSClient, "body"))
		}
		return e.Get("id") == "end"
	})
	if !slices.Equal(got, []string{"before", "during"}) {
		t.Fatalf("O7/H4: dave got %q across the stop, want [before during] once each", got)
	}
	// alice's one connection goes on at her new primary.
	waitFor(t, "alice's stream carried on", 30*time.Second, func() bool { return E.metric("pushd_streams_carried_total") == 1 })
	t.Logf("O7: alice's stream carried on by %v after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	send("after")
	a.ExpectBody("after")
	select {
	case <-P.proc.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("O7: the node did not exit after SIGTERM")
	}
	if err := P.proc.Err(); err != nil {
		t.Errorf("O7: the node's exit: %v", err)
	}
}
