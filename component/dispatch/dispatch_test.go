package dispatch_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"

	"pushd/component/apns"
	"pushd/component/dispatch"
	"pushd/component/fcm"
	"pushd/component/payload"
	"pushd/internal/apnstest"
	"pushd/internal/fcmtest"
)

const tok = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"

var devKey = [32]byte{7, 7, 7}

func openDB(t testing.TB, dir string) *badger.DB {
	t.Helper()
	opts := badger.DefaultOptions(dir).WithLogger(nil).WithNumCompactors(2).
		WithMemTableSize(8 << 20).WithValueThreshold(1 << 10).WithValueLogFileSize(8 << 20).WithBlockCacheSize(1 << 20)
	if dir == "" {
		opts = opts.WithInMemory(true)
	}
	db, err := badger.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newAPNS(t testing.TB) (*apns.Provider, *apnstest.Server) {
	t.Helper()
	return apnstest.NewTokenProvider(t, apnstest.Options{})
}

// clock is the injected clock: Now is fixed unless advanced; Sleep records
// the wait and returns at once (or waits for gate when one is set).
type clock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
	gate   chan struct{}
}

func newClock() *clock { return &clock{now: time.Unix(1700000000, 0)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	gate := c.gate
	c.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return ctx.Err()
}

func (c *clock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

type hook struct {
	mu   sync.Mutex
	dead []dispatch.DeadToken
}

func (h *hook) DeadToken(_ context.Context, d dispatch.DeadToken) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dead = append(h.dead, d)
	return nil
}

func (h *hook) got() []dispatch.DeadToken {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]dispatch.DeadToken(nil), h.dead...)
}

type env struct {
	d    *dispatch.Dispatcher
	reg  *prometheus.Registry
	m    *dispatch.Metrics
	clk  *clock
	hook *hook
	logs *bytes.Buffer
	lmu  *sync.Mutex
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func start(t testing.TB, db *badger.DB, provs map[dispatch.ProviderName]dispatch.Provider, mod func(*dispatch.Config)) *env {
	t.Helper()
	return startGated(t, db, provs, mod, nil)
}

// startGated is start with the push switch gate (nil: none).
func startGated(t testing.TB, db *badger.DB, provs map[dispatch.ProviderName]dispatch.Provider, mod func(*dispatch.Config), gate dispatch.Gate) *env {
	t.Helper()
	e := &env{reg: prometheus.NewRegistry(), clk: newClock(), hook: &hook{}, logs: &bytes.Buffer{}, lmu: &sync.Mutex{}}
	m, err := dispatch.NewMetrics(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	cfg := dispatch.DefaultConfig()
	cfg.Now, cfg.Sleep = e.clk.Now, e.clk.Sleep
	cfg.Jitter = func() float64 { return 0.5 }
	cfg.Logger = slog.New(slog.NewJSONHandler(lockedWriter{e.lmu, e.logs}, nil))
	if mod != nil {
		mod(&cfg)
	}
	e.d, err = dispatch.New(cfg, dispatch.Deps{DB: db, Providers: provs, DeadToken: e.hook, Metrics: m, Switch: gate})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) waitIdle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.d.Pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still %d pending", e.d.Pending())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (e *env) final(outcome string) float64 {
	return counter(e.reg, "pushd_dispatch_pushes_total", "outcome", outcome)
}

// counter sums the series of name whose label lname is lvalue.
func counter(reg *prometheus.Registry, name, lname, lvalue string) float64 {
	mfs, _ := reg.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == lname && l.GetValue() == lvalue {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func msgJob(tid string) dispatch.Job {
	return dispatch.Job{
		TrackingID:   tid,
		Registration: dispatch.Registration{ID: "reg-1", Provider: dispatch.APNS, Token: tok, Key: &devKey},
		Payload:      payload.Payload{Type: payload.TypeMessage, From: "romeo@example.net", Name: "Romeo", Body: "secret body", Count: 1},
	}
}

func TestRetryThenDeliveredOnce(t *testing.T) {
	p, srv := newAPNS(t)
	srv.Script(tok, apnstest.ServiceUnavailable, apnstest.OK)
	e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, nil)
	defer e.d.Close()
	tid, err := e.d.Submit(context.Background(), msgJob(""))
	if err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t)
	r := srv.Requests()
	if len(r) != 2 || r[0].Status != 503 || r[1].Status != 200 {
		t.Fatalf("requests: %+v", r)
	}
	if r[0].RemoteAddr == r[1].RemoteAddr {
		t.Fatal("retry reused the connection; P3 wants a fresh one")
	}
	if r[0].ApnsID != tid || r[1].ApnsID != tid {
		t.Fatal("tracking id not used as apns-id")
	}
	if got := e.final("delivered"); got != 1 {
		t.Fatalf("delivered = %v", got)
	}
	// One backoff: base 500 ms jittered at 0.5 → 375 ms, no real sleep.
	if s := e.clk.Sleeps(); len(s) != 1 || s[0] != 375*time.Millisecond {
		t.Fatalf("sleeps %v", s)
	}
	if !strings.Contains(e.logText(), tid) {
		t.Fatal("tracking id missing from logs")
	}
}

func TestRetryFCMQuotaThenDelivered(t *testing.T) {
	srv := fcmtest.NewServer("")
	defer srv.Close()
	cfg := fcm.DefaultConfig()
	cfg.Endpoint, cfg.ProjectID = srv.URL, "p"
	cfg.TokenSource = oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x", Expiry: time.Now().Add(time.Hour)})
	cfg.HTTP.RootCAs = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	p, err := fcm.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Script("ftok", fcmtest.Answer{ErrorCode: fcmtest.QuotaExceeded}, fcmtest.Answer{ErrorCode: fcmtest.Internal})
	e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.FCM: p}, nil)
	defer e.d.Close()
	job := msgJob("")
	job.Registration = dispatch.Registration{ID: "r", Provider: dispatch.FCM, Token: "ftok", Key: &devKey}
	if _, err := e.d.Submit(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t)
	r := srv.Requests()
	if len(r) != 3 || r[2].Status != 200 {
		t.Fatalf("requests: %+v", r)
	}
	if s := e.clk.Sleeps(); len(s) != 2 || s[1] != 750*time.Millisecond {
		t.Fatalf("exponential backoff: sleeps %v", s)
	}
}

func TestDeadTokenCallsHook(t *testing.T) {
	for _, ans := range []apnstest.Answer{apnstest.Unregistered(time.Now()), apnstest.BadDeviceToken, apnstest.DeviceTokenNotForTopic} {
		p, srv := newAPNS(t)
		srv.Script(tok, ans)
		e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, nil)
		if _, err := e.d.Submit(context.Background(), msgJob("")); err != nil {
			t.Fatal(err)
		}
		e.waitIdle(t)
		e.d.Close()
		dead := e.hook.got()
		if len(dead) != 1 || dead[0].Registration.ID != "reg-1" || dead[0].Registration.Key != nil ||
			dead[0].Channel != payload.ChannelMessage || dead[0].Token != tok {
			t.Fatalf("%s: hook got %+v", ans.Reason, dead)
		}
		if e.final("dead_token") != 1 || len(srv.Requests()) != 1 {
			t.Fatalf("%s: dead_token=%v requests=%d", ans.Reason, e.final("dead_token"), len(srv.Requests()))
		}
	}
}

// TestDeadVoIPTokenNamesChannel: a call push answered 410 on the VoIP
// channel hands the hook the VoIP channel and the VoIP token, so the
// registry can drop that token alone.
func TestDeadVoIPTokenNamesChannel(t *testing.T) {
	p, srv := newAPNS(t)
	voip := strings.Repeat("cd", 32)
	srv.Script(voip, apnstest.Unregistered(time.Now()))
	e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, nil)
	call := msgJob("")
	call.Registration.VoIPToken = voip
	call.Payload = payload.Payload{Type: payload.TypeCall, From: "+4930123"}
	if _, err := e.d.Submit(context.Background(), call); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t) // the hook runs before the push stops being pending
	dead := e.hook.got()
	e.d.Close()
	if len(dead) != 1 || dead[0].Channel != payload.ChannelVoIP || dead[0].Token != voip || dead[0].Registration.Token != tok {
		t.Fatalf("hook got %+v", dead)
	}
	if r := srv.Requests(); len(r) != 1 || r[0].PushType != "voip" || r[0].Token != voip {
		t.Fatalf("requests %+v", r)
	}
}

// blocked never answers: the push is in flight when the dispatcher stops.
type blocked struct{ called chan string }

func (b blocked) Send(ctx context.Context, p dispatch.Push) dispatch.Outcome {
	b.called <- p.TrackingID
	<-ctx.Done()
	return dispatch.Outcome{Result: dispatch.Retry, Err: ctx.Err()}
}
func (blocked) Reset() {}

// TestRestartSendsOnce: a push accepted and not answered when the
// component stops is sent exactly once after the restart (P5).
func TestRestartSendsOnce(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	b := blocked{called: make(chan string, 1)}
	e1 := start(t, db, map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: b}, nil)
	tid, err := e1.d.Submit(context.Background(), msgJob(""))
	if err != nil {
		t.Fatal(err)
	}
	<-b.called
	e1.d.Close()
	db.Close()

	db = openDB(t, dir)
	p, srv := newAPNS(t)
	provs := map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}
	e2 := start(t, db, provs, nil)
	e2.waitIdle(t)
	e2.d.Close()
	r := srv.Requests()
	if len(r) != 1 || r[0].ApnsID != tid || r[0].Status != 200 {
		t.Fatalf("after restart: %+v", r)
	}
	db.Close()

	db = openDB(t, dir)
	defer db.Close()
	e3 := start(t, db, provs, nil)
	defer e3.d.Close()
	if e3.d.Pending() != 0 {
		t.Fatal("answered push loaded again")
	}
	if _, err := e3.d.Submit(context.Background(), msgJob(tid)); !errors.Is(err, dispatch.ErrDuplicate) {
		t.Fatalf("resubmitting an answered tracking id: %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	if len(srv.Requests()) != 1 {
		t.Fatal("sent twice")
	}
}

func TestCoalescing(t *testing.T) {
	p, srv := newAPNS(t)
	e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, nil)
	defer e.d.Close()
	gate := make(chan struct{})
	e.clk.mu.Lock()
	e.clk.gate = gate
	e.clk.mu.Unlock()
	ctx := context.Background()
	a, _ := e.d.Submit(ctx, msgJob(""))
	srv.WaitRequests(1, 5*time.Second)
	_, _ = e.d.Submit(ctx, msgJob(""))  // inside the window: held
	c, _ := e.d.Submit(ctx, msgJob("")) // replaces the held one
	callID := dispatch.NewTrackingID()
	call := msgJob(callID)
	call.Registration.VoIPToken = strings.Repeat("ab", 32)
	call.Payload = payload.Payload{Type: payload.TypeCall, From: "+4930123"}
	if _, err := e.d.Submit(ctx, call); err != nil { // VoIP is never coalesced
		t.Fatal(err)
	}
	srv.WaitRequests(2, 5*time.Second)
	close(gate)
	e.waitIdle(t)
	var ids []string
	for _, r := range srv.Requests() {
		ids = append(ids, r.ApnsID+"/"+r.PushType)
	}
	if len(ids) != 3 || ids[0] != a+"/alert" || ids[1] != callID+"/voip" || ids[2] != c+"/alert" {
		t.Fatalf("sent %v", ids)
	}
	if e.final("coalesced") != 1 || e.final("delivered") != 3 {
		t.Fatalf("coalesced=%v delivered=%v", e.final("coalesced"), e.final("delivered"))
	}
}

// A call's pushes on the message channel (FCM; APNS without a VoIP
// token, region CN, legacy single-channel devices: C7) are never held by
// the message coalescing window (C2: "at once") nor replaced by a newer
// message summary, which would leave the phone without its call; only
// the summaries around them coalesce.
func TestCallOnMessageChannelNotCoalesced(t *testing.T) {
	p, srv := newAPNS(t)
	e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, nil)
	defer e.d.Close()
	gate := make(chan struct{})
	e.clk.mu.Lock()
	e.clk.gate = gate
	e.clk.mu.Unlock()
	ctx := context.Background()
	a, _ := e.d.Submit(ctx, msgJob(""))
	srv.WaitRequests(1, 5*time.Second)
	var calls []string
	for _, typ := range []payload.Type{payload.TypeCall, payload.TypeMissedCall} {
		id := dispatch.NewTrackingID()
		j := msgJob(id) // no VoIP token: the call goes as an alert
		j.Payload = payload.Payload{Type: typ, From: "+4930123", CallID: "c1"}
		if _, err := e.d.Submit(ctx, j); err != nil {
			t.Fatal(err)
		}
		calls = append(calls, id)
	}
	b, _ := e.d.Submit(ctx, msgJob("")) // inside the window: held, and sent
	srv.WaitRequests(3, 5*time.Second)
	close(gate)
	e.waitIdle(t)
	var ids []string
	for _, r := range srv.Requests() {
		ids = append(ids, r.ApnsID)
	}
	// The two call pushes go at once, side by side on the workers: in
	// either order between the first message and the held one.
	if len(ids) != 4 || ids[0] != a || ids[3] != b || !slices.Contains(ids[1:3], calls[0]) || !slices.Contains(ids[1:3], calls[1]) {
		t.Fatalf("sent %v, want the message, the call and the missed call at once, then the held message %v", ids, []string{a, calls[0], calls[1], b})
	}
	if e.final("coalesced") != 0 || e.final("delivered") != 4 {
		t.Fatalf("coalesced=%v delivered=%v", e.final("coalesced"), e.final("delivered"))
	}
}

func TestGiveUpAfterMaxAttempts(t *testing.T) {
	p, srv := newAPNS(t)
	srv.SetFallback(apnstest.InternalServerError)
	e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, func(c *dispatch.Config) { c.MaxAttempts = 3 })
	defer e.d.Close()
	if _, err := e.d.Submit(context.Background(), msgJob("")); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t)
	if n := len(srv.Requests()); n != 3 || e.final("expired") != 1 {
		t.Fatalf("requests=%d expired=%v", n, e.final("expired"))
	}
}

// TestAttemptTimeout: an answer that does not come within AttemptTimeout
// is retried on a fresh connection (P4's 5 s, shortened).
func TestAttemptTimeout(t *testing.T) {
	p, srv := newAPNS(t)
	srv.Script(tok, apnstest.Answer{Delay: 10 * time.Second})
	e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, func(c *dispatch.Config) { c.AttemptTimeout = 100 * time.Millisecond })
	defer e.d.Close()
	if _, err := e.d.Submit(context.Background(), msgJob("")); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t)
	r := srv.Requests()
	if len(r) != 2 || r[0].RemoteAddr == r[1].RemoteAddr || e.final("delivered") != 1 {
		t.Fatalf("requests %+v", r)
	}
}

func TestSubmitRefuses(t *testing.T) {
	p, _ := newAPNS(t)
	e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, nil)
	defer e.d.Close()
	ctx := context.Background()
	enc, _ := payload.Seal(devKey, payload.Payload{Type: payload.TypeMessage})
	clear := msgJob("")
	clear.Encrypted = enc // router ciphertext plus a clear body
	if _, err := e.d.Submit(ctx, clear); !errors.Is(err, dispatch.ErrClearPersonal) {
		t.Fatalf("clear personal: %v", err)
	}
	other := msgJob("")
	other.Registration.Provider = "lpns"
	if _, err := e.d.Submit(ctx, other); !errors.Is(err, dispatch.ErrNoProvider) {
		t.Fatalf("unknown provider: %v", err)
	}
	notoken := msgJob("")
	notoken.Registration.Token = ""
	if _, err := e.d.Submit(ctx, notoken); !errors.Is(err, dispatch.ErrInvalid) {
		t.Fatalf("no token: %v", err)
	}
	if got := counter(e.reg, "pushd_dispatch_refused_total", "reason", "clear_personal"); got != 1 {
		t.Fatalf("refused{clear_personal} = %v", got)
	}
}

// TestNoPersonalDataInLogsOrStore scans logs and the database (S2, S3).
func TestNoPersonalDataInLogsOrStore(t *testing.T) {
	p, srv := newAPNS(t)
	srv.Script(tok, apnstest.ServiceUnavailable)
	db := openDB(t, "")
	e := start(t, db, map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, func(c *dispatch.Config) {
		c.Sleep = func(ctx context.Context, d time.Duration) error { <-ctx.Done(); return ctx.Err() } // hold the retry
	})
	if _, err := e.d.Submit(context.Background(), msgJob("")); err != nil {
		t.Fatal(err)
	}
	srv.WaitRequests(1, 5*time.Second)
	time.Sleep(20 * time.Millisecond)
	var stored bytes.Buffer
	_ = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, _ := it.Item().ValueCopy(nil)
			stored.Write(it.Item().Key())
			stored.Write(v)
		}
		return nil
	})
	e.d.Close()
	logs := e.logText()
	for _, secret := range []string{"romeo", "Romeo", "secret body", tok, string(devKey[:3])} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains %q:\n%s", secret, logs)
		}
		if secret != tok && strings.Contains(stored.String(), secret) {
			t.Errorf("store contains %q", secret)
		}
	}
	if !strings.Contains(stored.String(), "dispatch/job/") {
		t.Fatal("pending push not persisted")
	}
}

func (e *env) logText() string {
	e.lmu.Lock()
	defer e.lmu.Unlock()
	return e.logs.String()
}

func TestChannelFor(t *testing.T) {
	r := dispatch.Registration{Provider: dispatch.APNS, Token: "m", VoIPToken: "v"}
	if r.ChannelFor(payload.TypeCall) != payload.ChannelVoIP || r.ChannelFor(payload.TypeMessage) != payload.ChannelMessage {
		t.Fatal("default channels")
	}
	cn := r
	cn.Region = "CN"
	legacy := r
	legacy.LegacySingleChannel = true
	if cn.ChannelFor(payload.TypeCall) != payload.ChannelMessage || legacy.ChannelFor(payload.TypeCall) != payload.ChannelMessage {
		t.Fatal("C7: CN and legacy calls go on the message channel")
	}
}

// Tracking ids are UUID v4 in lower-case hex, the form APNS takes as
// apns-id.
func TestNewTrackingIDIsUUIDv4(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := dispatch.NewTrackingID()
		if !re.MatchString(id) || seen[id] {
			t.Fatalf("tracking id %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
	}
}
