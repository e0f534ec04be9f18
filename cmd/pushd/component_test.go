package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"pushd/component/payload"
	"pushd/internal/apnstest"
	"pushd/internal/peertest"
)

const (
	pushDomain = "push.example.test"
	pushSecret = "component-secret"
	pushTopic  = apnsTopic
	alicePW    = "alice-pw"
	bobPW      = "bob-pw"
)

// syncBuffer is a log sink the test scans (S3).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// pushEnv is Prosody + mod_cloud_notify as the router, the APNS test
// server as the provider, and `pushd component` (runComponent, from a
// config file) in-process between them.
type pushEnv struct {
	prosody *peertest.ProsodyServer
	apns    *apnstest.Server
	stack   *pushStack
	logs    *syncBuffer
}

// runTestComponent runs `pushd component` on cfg, logging at debug level
// into the buffer it returns, until the test ends; it returns once the
// component is linked to its router.
func runTestComponent(t *testing.T, cfg componentFileConfig) (*pushStack, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *pushStack, 1)
	done := make(chan error, 1)
	go func() { done <- runComponent(ctx, cfg, log, func(s *pushStack) { started <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runComponent: %v", err)
		}
		t.Logf("pushd log:\n%s", logs.String())
	})
	var stack *pushStack
	select {
	case stack = <-started:
	case err := <-done:
		t.Fatalf("runComponent: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("component did not start")
	}
	waitFor(t, "the component's link to its router", 20*time.Second, stack.component.Connected)
	return stack, logs
}

func startPushEnv(t *testing.T) *pushEnv {
	t.Helper()
	peertest.RequirePeer(t, peertest.PeerSlixmpp)
	ps := peertest.Prosody(t, peertest.ProsodyOptions{
		Users:        map[string]string{"alice": alicePW, "bob": bobPW},
		ExtraModules: []string{"cloud_notify"},
		Components:   []peertest.ProsodyComponent{{Domain: pushDomain, Secret: pushSecret}},
		Options: map[string]any{
			"push_notification_with_body":   true,
			"push_notification_with_sender": true,
			"push_max_errors":               1,
		},
		HibernationTime: 300 * time.Second,
	})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srv := apnstest.NewServer(apnstest.Options{TokenKey: &key.PublicKey})
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("AuthKey.p8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	write("apns-ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	conf := fmt.Sprintf(`
domain = "example.test"
data_dir = "data"

[admin]
listen = ""

[log]
level = "debug"

[push]
domain = %q
secret = %q
router = %q

[apns]
endpoint = %q
ca_file = "apns-ca.pem"
auth = "token"
key_file = "AuthKey.p8"
key_id = "KEY1234567"
team_id = "TEAM123456"
topic = %q
`, pushDomain, pushSecret, ps.ComponentAddr, srv.URL, pushTopic)
	path := write("pushd.toml", []byte(conf))
	cfg, err := loadComponentConfig(path, true)
	if err != nil {
		t.Fatal(err)
	}
	env := &pushEnv{prosody: ps, apns: srv}
	env.stack, env.logs = runTestComponent(t, cfg)
	return env
}

func (e *pushEnv) args(t *testing.T, user, pw string, extra ...string) []string {
	return append(append(peertest.ServerArgs(t, e.prosody.Addr, e.prosody.Domain),
		"--user", e.prosody.JID(user), "--password", pw, "--component", pushDomain), extra...)
}

// register registers alice's phone with one execute and hibernates it.
func (e *pushEnv) register(t *testing.T, token string) peertest.Result {
	t.Helper()
	r := peertest.Slixmpp(t, "register.py", e.args(t, "alice", alicePW, "--token", token, "--device-id", "phone-"+token[:6])...)
	if r.String("status") != "completed" || r.String("node") == "" || r.String("secret") == "" || r.String("jid") != pushDomain {
		t.Fatalf("registration answer: %v", r)
	}
	if !r.Bool("enabled") || !r.Bool("hibernated") {
		t.Fatalf("push not enabled or not hibernated: %v", r)
	}
	return r
}

func (e *pushEnv) send(t *testing.T, bodies ...string) {
	t.Helper()
	args := e.args(t, "bob", bobPW, "--mode", "send", "--to", e.prosody.JID("alice"))
	for _, b := range bodies {
		args = append(args, "--body", b)
	}
	peertest.Slixmpp(t, "register.py", args...)
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// never asserts that cond stays false for d: proving an absence takes the
// whole d, but the test fails the moment cond holds.
func never(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	if poll(d, cond) {
		t.Fatalf("%s happened", what)
	}
}

func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

const (
	tokAlice = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	tokDead  = "dead0000e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	tokRetry = "5e7700d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
)

// onePush waits for the one APNS push of a scenario, checks it is an alert
// to alice's token and carries none of clear outside the ciphertext, and
// returns what alice's key opens and the push's tracking id.
func onePush(t *testing.T, apns *apnstest.Server, key [payload.KeySize]byte, clear ...string) (payload.Payload, string) {
	t.Helper()
	if reqs := apns.WaitRequests(1, 20*time.Second); len(reqs) == 0 {
		t.Fatal("no APNS request")
	}
	// Nothing follows: a second request past the coalescing window would
	// end this wait at once.
	reqs := apns.WaitRequests(2, 3*time.Second)
	if len(reqs) != 1 {
		t.Fatalf("%d APNS requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Token != tokAlice || r.Topic != pushTopic || r.PushType != "alert" || r.Status != 200 || r.Auth != "token" {
		t.Fatalf("APNS request: token %s topic %q type %q status %d auth %q", r.Token, r.Topic, r.PushType, r.Status, r.Auth)
	}
	for _, c := range clear {
		if bytes.Contains(r.Body, []byte(c)) {
			t.Errorf("APNS body carries %q in clear: %s", c, r.Body)
		}
	}
	var b struct {
		V   int    `json:"v"`
		TID string `json:"tid"`
		Enc string `json:"enc"`
	}
	if err := json.Unmarshal(r.Body, &b); err != nil {
		t.Fatal(err)
	}
	if b.V != 1 || b.TID == "" || r.ApnsID != b.TID {
		t.Errorf("clear fields: v %d tid %q apns-id %q", b.V, b.TID, r.ApnsID)
	}
	p, err := payload.Open(key, b.Enc)
	if err != nil {
		t.Fatalf("decrypt with the client's key: %v", err)
	}
	return p, b.TID
}

// TestPushEndToEndProsody: issue 4's main scenario (P1, P2, S2) and the log
// scan (S3).
func TestPushEndToEndProsody(t *testing.T) {
	t.Parallel()
	e := startPushEnv(t)
	reg := e.register(t, tokAlice)
	key, err := payload.KeyFromBase64(reg.String("key"))
	if err != nil {
		t.Fatal(err)
	}
	const body = "Wherefore art thou, Romeo-7319?"
	e.send(t, body)

	p, tid := onePush(t, e.apns, key, "bob", "alice", "Romeo-7319", "Wherefore")
	if p.Type != payload.TypeMessage || p.Body != body || !strings.HasPrefix(p.From, e.prosody.JID("bob")) {
		t.Fatalf("payload = %+v", p)
	}
	if !strings.Contains(e.logs.String(), tid) {
		t.Errorf("tracking id %s not in the log", tid)
	}
	// S3: the pushd log of the whole scenario names no user and no body.
	logs := e.logs.String()
	for _, s := range []string{"alice", "bob", "Romeo-7319", "Wherefore", tokAlice, reg.String("key"), reg.String("secret")} {
		if strings.Contains(logs, s) {
			t.Errorf("pushd log contains %q in clear", s)
		}
	}
	if devs, _ := e.stack.registry.List(); len(devs) != 1 {
		t.Fatalf("%d registrations, want 1", len(devs))
	}
}

// TestPushDeadTokenProsody: APNS 410 removes the registration; the next
// publish gets item-not-found; Prosody disables push for the device (P3).
func TestPushDeadTokenProsody(t *testing.T) {
	t.Parallel()
	e := startPushEnv(t)
	e.apns.Script(tokDead, apnstest.Unregistered(time.Now()))
	e.register(t, tokDead)
	c := e.stack.component

	e.send(t, "first")
	waitFor(t, "the 410", 20*time.Second, func() bool { return len(e.apns.Requests()) >= 1 })
	if r := e.apns.Requests()[0]; r.Status != 410 || r.Token != tokDead {
		t.Fatalf("APNS answered %d for %s", r.Status, r.Token)
	}
	waitFor(t, "the registration to go", 10*time.Second, func() bool {
		devs, err := e.stack.registry.List()
		return err == nil && len(devs) == 0
	})

	e.send(t, "second")
	waitFor(t, "item-not-found", 10*time.Second, func() bool { return c.Publishes("item_not_found") == 1 })

	e.send(t, "third")
	// Prosody must not publish again: a publish would end this wait early.
	never(t, "a publish for a disabled device", 2*time.Second, func() bool {
		return c.Publishes("item_not_found")+c.Publishes("accepted") > 2
	})
	if got := c.Publishes("item_not_found") + c.Publishes("accepted"); got != 2 {
		t.Fatalf("%d publishes after push was disabled, want 2 in all", got)
	}
	if n := len(e.apns.Requests()); n != 1 {
		t.Fatalf("%d APNS requests, want 1", n)
	}
}

// TestPushRetryAndMultiStepProsody: 503 then 200 delivers exactly once
// (P3); the multi-step XEP-0050 flow registers a device.
func TestPushRetryAndMultiStepProsody(t *testing.T) {
	t.Parallel()
	e := startPushEnv(t)

	ms := peertest.Slixmpp(t, "register.py", e.args(t, "bob", bobPW, "--mode", "multistep", "--token", tokAlice, "--device-id", "bob-tablet")...)
	if ms.String("first_status") != "executing" || ms.String("sessionid") == "" || ms.String("status") != "completed" ||
		ms.String("node") == "" || ms.String("secret") == "" || ms.String("canceled_status") != "canceled" {
		t.Fatalf("multi-step flow: %v", ms)
	}
	fields := strings.Join(ms.Strings("form_fields"), ",")
	for _, f := range []string{"token", "device-id", "key", "channels", "region"} {
		if !strings.Contains(fields, f) {
			t.Errorf("form lacks field %s: %s", f, fields)
		}
	}

	e.apns.Script(tokRetry, apnstest.ServiceUnavailable, apnstest.OK)
	e.register(t, tokRetry)
	e.send(t, "retry me")
	e.apns.WaitRequests(2, 20*time.Second)
	// A third request (a duplicate) would end this wait early.
	reqs := e.apns.WaitRequests(3, 3*time.Second)
	var delivered, unavailable int
	for _, r := range reqs {
		if r.Token != tokRetry {
			continue
		}
		switch r.Status {
		case 200:
			delivered++
		case 503:
			unavailable++
		}
	}
	if delivered != 1 || unavailable != 1 {
		t.Fatalf("requests: %d delivered, %d 503 (want 1 and 1): %d in all", delivered, unavailable, len(reqs))
	}
	if reqs[0].RemoteAddr == reqs[1].RemoteAddr {
		t.Logf("note: retry reused the connection %s", reqs[0].RemoteAddr)
	}
}
