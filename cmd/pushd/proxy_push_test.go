package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pushd/component"
	"pushd/component/dispatch"
	"pushd/internal/admin"
	"pushd/internal/apnstest"
	"pushd/internal/peertest"
	"pushd/internal/proxytest"
)

// startProxyPushNode runs `pushd serve` in-process with [apns] at a test
// server and [proxy] at a Digest proxy, one registered device for
// erin@localhost, and an admin API that serves the node's push stack (as
// node.go does once it passes Devices). It returns the config file that
// `pushd push test` / `pushd device` use against it.
func startProxyPushNode(t *testing.T, proxyURL, password string) (*apnstest.Server, string) {
	t.Helper()
	p := testAPNS(t)
	srv := p.Server
	n := startTestNode(t, func(c *fileConfig) {
		p.configure(&c.pushFileConfig)
		c.Proxy = proxySection{URL: proxyURL, Auth: "digest", User: "pushd", Password: password}
	})
	if n.push == nil {
		t.Fatal("node has no push stack")
	}
	if _, _, err := n.push.registry.Register(component.RegisterRequest{Account: "erin@localhost", DeviceID: "phone",
		Provider: dispatch.APNS, Token: tokAlice, Kind: "mobile"}); err != nil {
		t.Fatal(err)
	}
	tok, err := adminToken(n.cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	adm, err := admin.Listen(admin.Config{Listen: peertest.Loopback(peertest.FreePorts(t, 1)[0]), Token: tok,
		Devices: pushAdminDevices(n.push)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- adm.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	cfgFile := filepath.Join(t.TempDir(), "pushd.toml")
	body := fmt.Sprintf("domain = \"localhost\"\ndata_dir = %q\n[admin]\nlisten = %q\n", n.cfg.DataDir, adm.Addr())
	if err := os.WriteFile(cfgFile, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, cfgFile
}

// P4 through configuration: a push from `pushd serve` goes through a
// CONNECT proxy with Digest auth, and `pushd push test` and `pushd device`
// work while the node holds the database (admin API).
func TestPushThroughDigestProxy(t *testing.T) {
	px := proxytest.Start(t, "pushd", "proxy-pw", false)
	srv, cfgFile := startProxyPushNode(t, px.URL(), "proxy-pw")

	out, err := runCmd(t, "", "push", "test", "--config", cfgFile, "--timeout", "20s", "erin@localhost")
	if err != nil {
		t.Fatalf("push test: %v\n%s", err, out)
	}
	if !strings.Contains(out, "attempt 1: delivered status 200") {
		t.Fatalf("push test output:\n%s", out)
	}
	if px.Authorised.Load() == 0 {
		t.Fatal("the push did not go through the proxy")
	}
	if reqs := srv.Requests(); len(reqs) != 1 || reqs[0].Token != tokAlice || reqs[0].Status != 200 {
		t.Fatalf("APNS requests: %+v", reqs)
	}

	// device list|del go through the admin API too.
	out, err = runCmd(t, "", "device", "list", "--config", cfgFile, "erin@localhost")
	if err != nil || strings.Count(out, "\n") != 2 || strings.Contains(out, "erin") {
		t.Fatalf("device list: %v\n%s", err, out)
	}
	if out, err = runCmd(t, "", "device", "del", "--config", cfgFile, "erin@localhost"); err != nil || !strings.Contains(out, "removed 1") {
		t.Fatalf("device del: %v\n%s", err, out)
	}
	if _, err = runCmd(t, "", "push", "test", "--config", cfgFile, "erin@localhost"); err == nil || !strings.Contains(err.Error(), "no registration") {
		t.Fatalf("push test after del: %v", err)
	}
}

// Wrong proxy credentials: `pushd push test` says so in its output.
func TestPushProxyWrongCredentials(t *testing.T) {
	px := proxytest.Start(t, "pushd", "proxy-pw", false)
	srv, cfgFile := startProxyPushNode(t, px.URL(), "wrong-pw")
	start := time.Now()
	out, err := runCmd(t, "", "push", "test", "--config", cfgFile, "--timeout", "2s", "erin@localhost")
	if err == nil {
		t.Fatalf("push test succeeded through a proxy that refused it:\n%s", out)
	}
	if !strings.Contains(out, "proxy authentication failed (407") {
		t.Fatalf("output does not name the proxy's refusal:\n%s", out)
	}
	if time.Since(start) > 15*time.Second {
		t.Fatalf("push test took %v", time.Since(start))
	}
	if px.Authorised.Load() != 0 || len(srv.Requests()) != 0 {
		t.Fatalf("authorised %d, APNS requests %d", px.Authorised.Load(), len(srv.Requests()))
	}
}
