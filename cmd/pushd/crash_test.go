package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"pushd/internal/admin"
	"pushd/internal/peertest"
	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
)

var built struct {
	once sync.Once
	path string
	err  error
}

// pushdBinary builds cmd/pushd once per test binary, for tests that must
// kill a real process.
func pushdBinary(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "pushd-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "pushd")
		out, err := exec.Command("go", "build", "-o", built.path, ".").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// procNode is pushd running as its own process.
type procNode struct {
	t       testing.TB
	cfgFile string
	dataDir string
	c2s     string
	admin   string
	proc    *peertest.Process
}

func newProcNode(t testing.TB) *procNode {
	dir := t.TempDir()
	ports := peertest.FreePorts(t, 3)
	n := &procNode{t: t, cfgFile: filepath.Join(dir, "pushd.toml"), dataDir: filepath.Join(dir, "data"),
		c2s: peertest.Loopback(ports[0]), admin: peertest.Loopback(ports[2])}
	cfg := fmt.Sprintf("domain = \"localhost\"\ndata_dir = \"data\"\n[c2s]\nlisten = %q\n[component]\nlisten = %q\n[admin]\nlisten = %q\n[storage]\nsync = \"batch\"\n[sip]\nlisten = \"\"\n",
		n.c2s, peertest.Loopback(ports[1]), n.admin)
	if err := os.WriteFile(n.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *procNode) start() {
	n.t.Helper()
	n.proc = peertest.Start(n.t, "pushd", exec.Command(pushdBinary(n.t), "serve", "--config", n.cfgFile))
	if err := waitListening(t0(), n.c2s, 30*time.Second); err != nil {
		n.t.Fatal(err)
	}
}

func (n *procNode) adminClient() *admin.Client {
	tok, err := os.ReadFile(filepath.Join(n.dataDir, "admin.token"))
	if err != nil {
		n.t.Fatal(err)
	}
	return &admin.Client{Addr: n.admin, Token: strings.TrimSpace(string(tok))}
}

// waitDetached polls the node until the user's device is hibernating.
func (n *procNode) waitDetached(user string) {
	n.t.Helper()
	c := n.adminClient()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if s, err := c.Sessions(user); err == nil && len(s) == 1 && s[0].Detached {
			return
		}
	}
	n.t.Fatalf("%s never hibernated", user)
}

// Issue 3: kill -9 while alice is suspended with 100 messages acknowledged
// to bob; after a restart alice gets all 100, once, in order (H6, M5, and
// DESIGN rule 2: acknowledged means durable).
func TestKill9KeepsAcknowledgedQueue(t *testing.T) {
	n := newProcNode(t)
	for _, u := range []string{"alice", "bob"} {
		if _, err := runCmd(t, u+"-pw\n", "user", "add", "--config", n.cfgFile, u); err != nil {
			t.Fatal(err)
		}
	}
	n.start()
	a := xmpptest.Login(t, n.c2s, "localhost", "alice", "alice-pw", "phone")
	a.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/><presence/>`)
	a.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	_ = a.Conn.Close()
	n.waitDetached("alice")

	b := xmpptest.Login(t, n.c2s, "localhost", "bob", "bob-pw", "desk")
	b.Send(`<enable xmlns='urn:xmpp:sm:3'/>`)
	b.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
	const count = 100
	var burst strings.Builder
	for i := range count {
		fmt.Fprintf(&burst, `<message to='alice@localhost/phone' type='chat' id='m%d'><body>msg %d</body></message>`, i, i)
	}
	burst.WriteString(`<r xmlns='urn:xmpp:sm:3'/>`)
	b.Send(burst.String())
	ack := b.Expect("ack", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "a") })
	if h, _ := strconv.Atoi(ack.Get("h")); h < count {
		t.Fatalf("acknowledged %d stanzas, want %d", h, count)
	}

	if err := n.proc.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-n.proc.Done()
	n.start()

	a = xmpptest.Login(t, n.c2s, "localhost", "alice", "alice-pw", "phone")
	a.Send(`<presence/>`)
	got := messageBodies(t, a, count)
	for i, body := range got {
		if body != fmt.Sprintf("msg %d", i) {
			t.Fatalf("message %d is %q: lost, duplicated or out of order", i, body)
		}
	}
	// Nothing more: a ping round trip shows no duplicate was waiting.
	a.Send(`<iq type='get' id='end'><ping xmlns='urn:xmpp:ping'/></iq>`)
	a.Expect("ping", func(e *stanza.Element) bool {
		if e.Is(stanza.NSClient, "message") {
			t.Fatalf("extra message after the 100: %s", e)
		}
		return e.Get("id") == "end"
	})
}

func t0() context.Context { return context.Background() }
