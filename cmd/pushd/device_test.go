package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pushd/component"
	"pushd/component/dispatch"
	"pushd/internal/apnstest"
	"pushd/internal/store"
)

func TestComponentConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "pushd.toml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Keys of serve's sections are ignored; push paths are relative to the file.
	cfg, err := loadComponentConfig(write(`
domain = "example.net"
[c2s]
listen = "127.0.0.1:5222"
[push]
secret = "s"
router = "127.0.0.1:5347"
[apns]
topic = "com.example"
key_file = "k.p8"
[proxy]
url = "http://proxy:3128"
auth = "digest"
`), true)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Push.Domain != "push.example.net" || cfg.APNS.KeyFile != filepath.Join(dir, "k.p8") ||
		cfg.APNS.Endpoint != "https://api.push.apple.com" || cfg.APNS.Auth != "token" || cfg.DataDir != filepath.Join(dir, "data") {
		t.Fatalf("config: %+v", cfg)
	}
	for name, body := range map[string]string{
		"unknown push key": "[push]\nbogus = 1\n",
		"missing router":   "[push]\ndomain = \"p\"\nsecret = \"s\"\n",
		"bad apns auth":    "[push]\ndomain = \"p\"\nsecret = \"s\"\nrouter = \"r:1\"\n[apns]\nauth = \"magic\"\n",
		"bad proxy auth":   "[push]\ndomain = \"p\"\nsecret = \"s\"\nrouter = \"r:1\"\n[proxy]\nurl = \"http://p\"\nauth = \"ntlm\"\n",
	} {
		if _, err := loadComponentConfig(write(body), true); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := startPush(pushFileConfig{}, nil, pushOptions{}); err == nil || !strings.Contains(err.Error(), "no push provider") {
		t.Errorf("no provider: %v", err)
	}
}

func TestDeviceCommandOffline(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "pushd.toml")
	if err := os.WriteFile(conf, []byte("data_dir = \"data\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(store.Config{Dir: filepath.Join(dir, "data", "db"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := component.OpenRegistry(db.Badger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := reg.Register(component.RegisterRequest{Account: "carol@example.test", DeviceID: "p", Provider: dispatch.APNS, Token: "abcd"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.Register(component.RegisterRequest{Account: "dave@example.test", DeviceID: "p", Provider: dispatch.FCM, Token: "efgh"}); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	var out, errb bytes.Buffer
	if err := cmdDevice([]string{"list", "--config", conf}, &out, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	if !strings.Contains(out.String(), d.Node) || strings.Count(out.String(), "\n") != 3 || strings.Contains(out.String(), "carol") {
		t.Fatalf("list:\n%s", out.String())
	}
	out.Reset()
	if err := cmdDevice([]string{"list", "--config", conf, "carol@example.test"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), "\n") != 2 || !strings.Contains(out.String(), d.Node) {
		t.Fatalf("list carol:\n%s", out.String())
	}
	if err := cmdDevice([]string{"del", "--config", conf, d.Node}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if err := cmdDevice([]string{"del", "--config", conf, "dave@example.test"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := cmdDevice([]string{"list", "--config", conf}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("after del:\n%s", out.String())
	}
	if err := cmdDevice([]string{"del", "--config", conf, "nosuchnode"}, &out, &errb); err == nil {
		t.Fatal("deleting an unknown node succeeded")
	}
}

func TestPushTestCommandPath(t *testing.T) {
	srv := apnstest.NewServer(apnstest.Options{})
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	_ = os.WriteFile(filepath.Join(dir, "k.p8"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	_ = os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	cfg := defaultPushFileConfig()
	cfg.APNS.Endpoint, cfg.APNS.CAFile, cfg.APNS.Topic = srv.URL, filepath.Join(dir, "ca.pem"), "com.example"
	cfg.APNS.KeyFile, cfg.APNS.KeyID, cfg.APNS.TeamID = filepath.Join(dir, "k.p8"), "KID", "TEAM"

	db, err := store.Open(store.Config{InMemory: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	reg, _ := component.OpenRegistry(db.Badger(), nil)
	const tok = "0123456789abcdef0123456789abcdef"
	if _, _, err := reg.Register(component.RegisterRequest{Account: "erin@example.test", DeviceID: "p", Provider: dispatch.APNS, Token: tok}); err != nil {
		t.Fatal(err)
	}
	srv.Script(tok, apnstest.TooManyRequests, apnstest.OK)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := pushTest(ctx, cfg, db, "erin@example.test", &out, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err, out.String())
	}
	s := out.String()
	if !strings.Contains(s, "attempt 1: retry status 429 reason TooManyRequests") || !strings.Contains(s, "attempt 2: delivered status 200") {
		t.Fatalf("output:\n%s", s)
	}
	if err := pushTest(ctx, cfg, db, "nobody@example.test", &out, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("test push to an account without devices succeeded")
	}
}

// TestInProcessPushLinksToRouter: the `pushd serve` path links the
// component to the built-in router over a net.Pipe through XEP-0114.
func TestInProcessPushLinksToRouter(t *testing.T) {
	const secret = "in-process-secret"
	tn := startTestNode(t, func(c *fileConfig) {
		c.Component.Accept = append(c.Component.Accept, componentAccept{Domain: "push.localhost", Secret: secret})
	})
	srv := apnstest.NewServer(apnstest.Options{})
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	_ = os.WriteFile(filepath.Join(dir, "k.p8"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	cfg := defaultPushFileConfig()
	cfg.APNS.Endpoint, cfg.APNS.Topic = srv.URL, "com.example"
	cfg.APNS.KeyFile, cfg.APNS.KeyID, cfg.APNS.TeamID = filepath.Join(dir, "k.p8"), "KID", "TEAM"
	domain, sec := pushDomainAndSecret(pushFileConfig{Push: pushSection{Secret: secret}}, "localhost")
	s, run, err := startInProcessPush(cfg, tn.node.db, domain, sec, tn.node.router.ServeComponentConn,
		pushOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		s.close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for !s.component.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("in-process component did not link to the router")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
