package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"pushd/component/payload"
	"pushd/internal/apnstest"
	"pushd/internal/peertest"
)

// Issue 4: the push component works against ejabberd with no change.
// ejabberd 23.01's mod_push differs from Prosody's mod_cloud_notify in what
// it publishes: from the bare domain too, with the publish-options form
// given at enable, but a summary without message-count, and by default no
// sender and a fixed body text ("New message") instead of the message's.

const ejPushDomain = "push.localhost"

// ejabberdPushEnv is ejabberd + mod_push as the router, the APNS test
// server as the provider, and `pushd component` (runComponent, from a
// config file) in-process between them.
type ejabberdPushEnv struct {
	ej    *peertest.EjabberdServer
	apns  *apnstest.Server
	stack *pushStack
	logs  *syncBuffer
}

// startEjabberdPushEnv starts the three; modPush are mod_push's options
// (nil: ejabberd's defaults).
func startEjabberdPushEnv(t *testing.T, modPush map[string]any) *ejabberdPushEnv {
	t.Helper()
	peertest.RequirePeer(t, peertest.PeerSlixmpp)
	ej := peertest.Ejabberd(t, peertest.EjabberdOptions{
		Users:      map[string]string{"alice": alicePW, "bob": bobPW},
		Components: []peertest.EjabberdComponent{{Domain: ejPushDomain, Secret: pushSecret}},
		Modules:    peertest.EjabberdPushModules(modPush),
	})
	srv, withAPNS := apnsTestServer(t)

	dir := t.TempDir()
	path := filepath.Join(dir, "pushd.toml")
	conf := fmt.Sprintf(`
domain = "localhost"
data_dir = "data"

[admin]
listen = ""

[log]
level = "debug"

[push]
domain = %q
secret = %q
router = %q
`, ejPushDomain, pushSecret, ej.ComponentAddr)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadComponentConfig(path, true)
	if err != nil {
		t.Fatal(err)
	}
	fc := fileConfig{pushFileConfig: cfg.pushFileConfig}
	withAPNS(&fc)
	cfg.pushFileConfig = fc.pushFileConfig

	env := &ejabberdPushEnv{ej: ej, apns: srv}
	env.stack, env.logs = runTestComponent(t, cfg)
	return env
}

func (e *ejabberdPushEnv) args(t *testing.T, user, pw string, extra ...string) []string {
	return append(append(peertest.ServerArgs(t, e.ej.Addr, e.ej.Domain),
		"--user", e.ej.JID(user), "--password", pw, "--component", ejPushDomain), extra...)
}

// checkRouting drives disco and a multi-step XEP-0050 session to the
// component through ejabberd's router, from bob's desktop client.
func (e *ejabberdPushEnv) checkRouting(t *testing.T, bob *peertest.PushClient) {
	t.Helper()
	ids, feats, err := bob.DiscoInfo(ejPushDomain, "")
	if err != nil {
		t.Fatalf("disco#info of the component: %v", err)
	}
	if !slices.Contains(ids, peertest.DiscoIdentity{Category: "pubsub", Type: "push", Name: "pushd"}) {
		t.Errorf("component identities: %v", ids)
	}
	for _, f := range []string{"urn:xmpp:push:0", "http://jabber.org/protocol/commands"} {
		if !slices.Contains(feats, f) {
			t.Errorf("component features lack %s: %v", f, feats)
		}
	}
	ids, feats, err = bob.DiscoInfo(ejPushDomain, "register-push-apns")
	if err != nil || len(ids) != 1 || ids[0].Type != "command-node" || !slices.Contains(feats, "jabber:x:data") {
		t.Errorf("disco#info of the command node: %v %v %v", ids, feats, err)
	}

	ms := peertest.Slixmpp(t, "register.py", e.args(t, "bob", bobPW, "--mode", "multistep", "--token", tokAlice, "--device-id", "bob-tablet")...)
	if ms.String("first_status") != "executing" || ms.String("sessionid") == "" || ms.String("status") != "completed" ||
		ms.String("jid") != ejPushDomain || ms.String("node") == "" || ms.String("secret") == "" || ms.String("canceled_status") != "canceled" {
		t.Fatalf("multi-step flow through ejabberd: %v", ms)
	}
}

// TestPushEndToEndEjabberd: issue 4's main scenario (P1, P2, S2, S3) with
// ejabberd as the router, once with sender and body in mod_push's summary
// (as the Prosody test runs) and once with ejabberd's defaults.
func TestPushEndToEndEjabberd(t *testing.T) {
	t.Parallel()
	peertest.RequirePeer(t, peertest.PeerEjabberd)
	for _, tc := range []struct {
		name    string
		modPush map[string]any
		routing bool // disco and multi-step (once is enough)
		check   func(t *testing.T, p payload.Payload, body string)
	}{{
		name:    "sender-and-body",
		modPush: map[string]any{"include_sender": true, "include_body": true},
		routing: true,
		check: func(t *testing.T, p payload.Payload, body string) {
			// ejabberd names the sender by the full JID it sent from.
			if p.Type != payload.TypeMessage || p.Body != body || !strings.HasPrefix(p.From, "bob@localhost") {
				t.Errorf("payload = %+v", p)
			}
		},
	}, {
		name: "defaults",
		check: func(t *testing.T, p payload.Payload, body string) {
			// No sender, and mod_push's fixed text where a body would be:
			// a wake-up that carries nothing of the message.
			if p.Type != payload.TypeMessage || p.From != "" || p.Name != "" || p.Body != "New message" {
				t.Errorf("payload = %+v, want a message wake-up without sender whose body is ejabberd's fixed text", p)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			e := startEjabberdPushEnv(t, tc.modPush)
			t.Logf("ejabberd and component up in %v", time.Since(start).Round(time.Millisecond))

			bob := peertest.StartPushClient(t, peertest.PushClientOptions{Addr: e.ej.Addr, Domain: e.ej.Domain,
				JID: e.ej.JID("bob"), Password: bobPW})
			if _, _, err := bob.Login("desk"); err != nil {
				t.Fatalf("bob login: %v", err)
			}
			devices := 1
			if tc.routing {
				e.checkRouting(t, bob)
				devices++
			}

			// One execute registers the phone; push is enabled on
			// ejabberd with the answer, then the stream hibernates.
			reg := peertest.Slixmpp(t, "register.py", e.args(t, "alice", alicePW, "--token", tokAlice, "--device-id", "phone-1")...)
			if reg.String("status") != "completed" || reg.String("jid") != ejPushDomain || reg.String("node") == "" ||
				reg.String("secret") == "" || !reg.Bool("enabled") || !reg.Bool("hibernated") {
				t.Fatalf("registration through ejabberd: %v", reg)
			}
			key, err := payload.KeyFromBase64(reg.String("key"))
			if err != nil {
				t.Fatal(err)
			}

			const body = "Wherefore art thou, Romeo-7319?"
			if err := bob.Send(e.ej.JID("alice"), body); err != nil {
				t.Fatalf("bob send: %v", err)
			}
			p, tid := onePush(t, e.apns, key, "bob", "alice", "Romeo-7319", "Wherefore")
			t.Logf("push delivered %v after start", time.Since(start).Round(time.Millisecond))
			c := e.stack.component
			if a, nf := c.Publishes("accepted"), c.Publishes("item_not_found"); a != 1 || nf != 0 {
				t.Errorf("publishes: %d accepted, %d item-not-found; want 1 and 0", a, nf)
			}
			t.Logf("payload: type %q from %q body %q count %d", p.Type, p.From, p.Body, p.Count)
			tc.check(t, p, body)

			// S3: the pushd log of the whole scenario names no user and no body.
			logs := e.logs.String()
			if !strings.Contains(logs, tid) {
				t.Errorf("tracking id %s not in the log", tid)
			}
			for _, s := range []string{"alice", "bob", "Romeo-7319", "Wherefore", tokAlice, reg.String("key"), reg.String("secret")} {
				if strings.Contains(logs, s) {
					t.Errorf("pushd log contains %q in clear", s)
				}
			}
			if devs, _ := e.stack.registry.List(); len(devs) != devices {
				t.Fatalf("%d registrations, want %d", len(devs), devices)
			}
		})
	}
}
