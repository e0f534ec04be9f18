package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"mellium.im/xmpp/jid"

	"pushd/internal/peertest"
	"pushd/jsm"
)

// testNode is a pushd node running in the test process on free loopback
// ports with its data in a temporary directory.
type testNode struct {
	*node
	t       testing.TB
	cfgFile string
	stop    func() // ends Run; safe to call twice
}

// startTestNode starts a node; mutate may change the config first.
func startTestNode(t testing.TB, mutate func(*fileConfig)) *testNode {
	t.Helper()
	return startTestNodeLogging(t, nil, mutate)
}

// startTestNodeLogging is startTestNode that also copies the node's log
// (at debug level) to logs, for tests that scan it.
func startTestNodeLogging(t testing.TB, logs io.Writer, mutate func(*fileConfig)) *testNode {
	t.Helper()
	dir := t.TempDir()
	config := func() fileConfig {
		cfg := defaultFileConfig()
		cfg.DataDir = dir
		ports := peertest.FreePorts(t, 3)
		cfg.C2S.Listen = peertest.Loopback(ports[0])
		cfg.Component.Listen = peertest.Loopback(ports[1])
		cfg.Admin.Listen = peertest.Loopback(ports[2])
		cfg.SIP.Listen = "" // tests that call set their own free port
		if mutate != nil {
			mutate(&cfg)
		}
		return cfg
	}
	cfg := config()
	tl := &testLog{t: t}
	// Registered first, so it runs last: once the node is stopped, late
	// lines (memberlist's goroutines wind down on their own) are dropped.
	t.Cleanup(tl.close)
	var w io.Writer = tl
	level := slog.LevelInfo
	if logs != nil {
		w, level = io.MultiWriter(w, logs), slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	n, err := startNode(cfg, log)
	// A port found free may be taken before the node binds it (other
	// tests, outgoing connections): try again with others. mutate picks
	// its own ports afresh each time it is called.
	for try := 0; err != nil && strings.Contains(err.Error(), "address already in use") && try < 4; try++ {
		cfg = config()
		n, err = startNode(cfg, log)
	}
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("node stopped with: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	tn := &testNode{node: n, t: t, stop: stop}
	tn.cfgFile = filepath.Join(cfg.DataDir, "pushd.toml")
	tn.writeConfig()
	return tn
}

// writeConfig writes the node's config as a file for subcommands.
func (n *testNode) writeConfig() {
	c := n.cfg
	var b strings.Builder
	fmt.Fprintf(&b, "domain = %q\ndata_dir = %q\n[c2s]\nlisten = %q\n[component]\nlisten = %q\n[admin]\nlisten = %q\n",
		c.Domain, c.DataDir, c.C2S.Listen, c.Component.Listen, c.Admin.Listen)
	if err := os.WriteFile(n.cfgFile, []byte(b.String()), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

// addUser creates an account on the running node.
func (n *testNode) addUser(user, password string) string {
	n.t.Helper()
	if err := (nodeUsers{n.node}).AddUser(user, password); err != nil {
		n.t.Fatalf("add user %s: %v", user, err)
	}
	return user + "@" + n.cfg.Domain
}

func (n *testNode) c2s() string { return n.router.Addr("c2s") }

// testLog sends the node's log lines to the test log, and stops once the
// test is over (a late line would panic).
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (l *testLog) close() {
	l.mu.Lock()
	l.done = true
	l.mu.Unlock()
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (n *testNode) devices(t testing.TB, user string) []jsm.DeviceInfo {
	t.Helper()
	j, err := jid.Parse(user)
	if err != nil {
		t.Fatal(err)
	}
	return n.router.Devices(j)
}

// stopAbruptly ends the node as a crash would for its peers: listeners
// and connections close with no stream end and no cluster goodbye.
func (n *testNode) stopAbruptly() {
	n.stop()
}

func mustJID(t testing.TB, s string) jid.JID {
	t.Helper()
	j, err := jid.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
