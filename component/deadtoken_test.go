package component

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"pushd/component/dispatch"
	"pushd/component/payload"
	"pushd/internal/apnstest"
	"pushd/internal/stanza"
)

// deadEnv is the real push path of a node: a publish through the
// component, the registry, the dispatcher with the registry as its
// dead-token hook, the apns2 provider and the APNS test server.
type deadEnv struct {
	c   *Component
	reg *Registry
	d   *dispatch.Dispatcher
	srv *apnstest.Server

	mu      sync.Mutex
	changes []string // nodes OnChange heard of
}

func newDeadEnv(t *testing.T) *deadEnv {
	t.Helper()
	prov, srv := apnstest.NewTokenProvider(t, apnstest.Options{})
	db := testDB(t)
	reg, err := OpenRegistry(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &deadEnv{reg: reg, srv: srv}
	reg.OnChange(func(node string, _ []byte) func() error {
		e.mu.Lock()
		e.changes = append(e.changes, node)
		e.mu.Unlock()
		return nil
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dcfg := dispatch.DefaultConfig()
	dcfg.CoalesceWindow, dcfg.Logger = 0, log // every publish is its own push
	e.d, err = dispatch.New(dcfg, dispatch.Deps{DB: db, Providers: map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: prov}, DeadToken: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.d.Close() })
	e.c, err = New(Config{Domain: "push.example.test", Logger: log}, reg, e.d)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// idle waits until every accepted push was answered (the dead-token hook
// runs before a push stops being pending).
func (e *deadEnv) idle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.d.Pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still %d pending", e.d.Pending())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (e *deadEnv) publish(t *testing.T, node, secret string) *stanza.Element {
	t.Helper()
	r := e.c.Handle(context.Background(), publishIQ("example.test", node, secret, field("message-count", "1")))
	e.idle(t)
	return r
}

func (e *deadEnv) call(t *testing.T, node string) {
	t.Helper()
	dev, err := e.reg.Get(node)
	if err != nil {
		t.Fatal(err)
	}
	job := dispatch.Job{Registration: dev.Registration(), Payload: payload.Payload{Type: payload.TypeCall, From: "+4930123"}}
	if _, err := e.d.Submit(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	e.idle(t)
}

// last returns the last request the APNS server got as "token/push type/status".
func (e *deadEnv) last() string {
	r := e.srv.Requests()
	if len(r) == 0 {
		return ""
	}
	l := r[len(r)-1]
	return l.Token + "/" + l.PushType + "/" + http.StatusText(l.Status)
}

const (
	deadMsgTok  = "aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11"
	deadVoIPTok = "bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22"
)

func (e *deadEnv) register(t *testing.T) (node, secret string) {
	t.Helper()
	r := resultFields(t, e.c.Handle(context.Background(), cmdIQ("u@example.test/phone", CmdRegisterAPNS, "execute", "",
		field("token", deadMsgTok), field("voip-token", deadVoIPTok), field("device-id", "phone"), field("key", key32))))
	return r["node"], r["secret"]
}

// A VoIP push answered 410 Unregistered, 400 BadDeviceToken or
// DeviceTokenNotForTopic removes the VoIP token only: message pushes are
// still delivered, calls fall back to the message channel, and the change
// is replicated like any registration write.
func TestDeadVoIPTokenKeepsMessageChannel(t *testing.T) {
	for _, ans := range []apnstest.Answer{apnstest.Unregistered(time.Now()), apnstest.BadDeviceToken, apnstest.DeviceTokenNotForTopic} {
		t.Run(ans.Reason, func(t *testing.T) {
			e := newDeadEnv(t)
			node, secret := e.register(t)
			e.srv.Script(deadVoIPTok, ans)
			e.call(t, node)
			if got, want := e.last(), deadVoIPTok+"/voip/"+http.StatusText(ans.Status); got != want {
				t.Fatalf("call went as %s, want %s", got, want)
			}
			dev, err := e.reg.Get(node)
			if err != nil {
				t.Fatalf("dead VoIP token removed the registration: %v", err)
			}
			if dev.VoIPToken != "" || dev.Token != deadMsgTok || len(dev.Key) != payload.KeySize {
				t.Fatalf("after a dead VoIP token: %+v", dev)
			}
			if r := e.publish(t, node, secret); r.Get("type") != "result" {
				t.Fatalf("publish after a dead VoIP token: %s", r)
			}
			if got := e.last(); got != deadMsgTok+"/alert/OK" {
				t.Fatalf("message push went as %s", got)
			}
			e.call(t, node)
			if got := e.last(); got != deadMsgTok+"/alert/OK" {
				t.Fatalf("call without a VoIP token went as %s, want the message channel", got)
			}
			// Replication: the record another node imports has no VoIP token.
			e.mu.Lock()
			changes := strings.Join(e.changes, ",")
			e.mu.Unlock()
			if !strings.Contains(changes, node) {
				t.Fatalf("OnChange not told: %q", changes)
			}
			data, err := e.reg.Export(node)
			if err != nil {
				t.Fatal(err)
			}
			other, err := OpenRegistry(testDB(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := other.Import(node, data); err != nil {
				t.Fatal(err)
			}
			if d, err := other.Get(node); err != nil || d.VoIPToken != "" || d.Token != deadMsgTok {
				t.Fatalf("replica: %+v %v", d, err)
			}
		})
	}
}

// A message push answered 410 removes the whole registration: the next
// publish gets item-not-found (P3).
func TestDeadMessageTokenRemovesRegistration(t *testing.T) {
	e := newDeadEnv(t)
	node, secret := e.register(t)
	e.srv.Script(deadMsgTok, apnstest.Unregistered(time.Now()))
	if r := e.publish(t, node, secret); r.Get("type") != "result" {
		t.Fatalf("publish: %s", r)
	}
	if got := e.last(); got != deadMsgTok+"/alert/Gone" {
		t.Fatalf("message push went as %s", got)
	}
	if _, err := e.reg.Get(node); !errors.Is(err, ErrNotFound) {
		t.Fatalf("registration kept after a dead message token: %v", err)
	}
	if got := errCond(e.publish(t, node, secret)); got != "cancel/item-not-found" {
		t.Fatalf("next publish: %s", got)
	}
}

// A verdict on a token that was renewed since (re-registration) changes
// nothing: the new token is not known dead.
func TestDeadTokenRenewedSince(t *testing.T) {
	reg, err := OpenRegistry(testDB(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	old, fresh := "0ld0", "f4e5"
	d, _, err := reg.Register(RegisterRequest{Account: "u@example.test", DeviceID: "phone", Provider: dispatch.APNS, Token: "m1", VoIPToken: &old})
	if err != nil {
		t.Fatal(err)
	}
	stale := d.Registration()
	if _, _, err := reg.Register(RegisterRequest{Account: "u@example.test", DeviceID: "phone", Provider: dispatch.APNS, Token: "m1", VoIPToken: &fresh}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := reg.DeadToken(ctx, dispatch.DeadToken{Registration: stale, Channel: payload.ChannelVoIP, Token: old}); err != nil {
		t.Fatal(err)
	}
	if got, _ := reg.Get(d.Node); got.VoIPToken != fresh {
		t.Fatalf("renewed VoIP token dropped: %+v", got)
	}
	// A VoIP-channel verdict on the message token (sent there for want
	// of a VoIP token) does not remove the registration.
	if err := reg.DeadToken(ctx, dispatch.DeadToken{Registration: stale, Channel: payload.ChannelVoIP, Token: "m1"}); err != nil {
		t.Fatal(err)
	}
	if got, err := reg.Get(d.Node); err != nil || got.Token != "m1" || got.VoIPToken != fresh {
		t.Fatalf("VoIP verdict on the message token: %+v %v", got, err)
	}
}

// sipHook stands for the SIP registrar's dead-token hook.
type sipHook struct {
	mu   sync.Mutex
	dead []dispatch.DeadToken
}

func (h *sipHook) DeadToken(_ context.Context, d dispatch.DeadToken) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dead = append(h.dead, d)
	return nil
}

// A SIP binding and the XMPP registration of one phone share its tokens.
// A call push of the SIP side answered 410 on the VoIP token tells the SIP
// registrar's hook only: the component's registry keeps the phone's VoIP
// token (calls it routes still ring), and nothing is replicated. Even
// handed such a verdict directly, the registry leaves it to its owner.
func TestSIPDeadVoIPTokenSparesRegistry(t *testing.T) {
	e := newDeadEnv(t)
	node, _ := e.register(t)
	sip := &sipHook{}
	e.d.Route(dispatch.OwnerSIP, sip)
	dev, err := e.reg.Get(node)
	if err != nil {
		t.Fatal(err)
	}
	binding := dev.Registration() // same id, tokens and key: the worst case
	binding.Owner = dispatch.OwnerSIP
	e.srv.Script(deadVoIPTok, apnstest.Unregistered(time.Now()))
	job := dispatch.Job{Registration: binding, Payload: payload.Payload{Type: payload.TypeCall, From: "+4930123"}}
	if _, err := e.d.Submit(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	e.idle(t)
	if got := e.last(); got != deadVoIPTok+"/voip/Gone" {
		t.Fatalf("call went as %s", got)
	}
	sip.mu.Lock()
	heard := append([]dispatch.DeadToken(nil), sip.dead...)
	sip.mu.Unlock()
	if len(heard) != 1 || heard[0].Token != deadVoIPTok || heard[0].Channel != payload.ChannelVoIP || heard[0].Registration.Owner != dispatch.OwnerSIP {
		t.Fatalf("SIP hook heard %+v", heard)
	}
	if d, err := e.reg.Get(node); err != nil || d.VoIPToken != deadVoIPTok || d.Token != deadMsgTok {
		t.Fatalf("registry after a SIP binding's dead VoIP token: %+v %v", d, err)
	}
	e.mu.Lock()
	changes := strings.Join(e.changes, ",")
	e.mu.Unlock()
	if strings.Count(changes, node) != 1 { // the registration itself only
		t.Fatalf("OnChange heard %q", changes)
	}
	if err := e.reg.DeadToken(context.Background(), heard[0]); err != nil {
		t.Fatal(err)
	}
	if d, err := e.reg.Get(node); err != nil || d.VoIPToken != deadVoIPTok {
		t.Fatalf("registry took another owner's verdict: %+v %v", d, err)
	}
}
