package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"

	"pushd/component"
	"pushd/component/apns"
	"pushd/component/dispatch"
	"pushd/component/payload"
	"pushd/internal/apnstest"
	"pushd/internal/bench"
	"pushd/internal/stanza"
	"pushd/internal/store"
)

const benchPushUsage = `usage: pushd bench push [--pushes N] [--concurrency C] [--rounds R] [--cpuprofile FILE]
Publishes/s end to end — an XEP-0357 publish handed to the push component
(registry check, dispatcher: seal, persist, worker, apns2) until the
in-tree APNS test server's answer is recorded — against the raw rate of an
apns2 client to the same server, in the same run, plus p50/p99
publish→answer latency. Everything runs in this process on loopback.`

// benchPushResult is one measured path.
type benchPushResult struct {
	Name     string
	Pushes   int
	Elapsed  time.Duration
	P50, P99 time.Duration
	CPU      time.Duration // process CPU time per push
}

func (r benchPushResult) rate() float64 { return float64(r.Pushes) / r.Elapsed.Seconds() }

// cmdBenchPush is `pushd bench push`.
func cmdBenchPush(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pushes := fs.Int("pushes", 20000, "pushes per path")
	conc := fs.Int("concurrency", 16, "concurrent publishers (and raw senders)")
	rounds := fs.Int("rounds", 3, "alternating raw / end-to-end rounds")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the rounds (both paths, after set-up and warm-up) to this `file`")
	fs.Usage = func() { fmt.Fprintln(stderr, benchPushUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pushes <= 0 || *conc <= 0 || *rounds <= 0 {
		return errors.New("bench push: --pushes, --concurrency and --rounds must be positive")
	}
	res, err := benchPush(context.Background(), *pushes, *conc, *rounds, *cpuprofile)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%-28s %8s %10s %10s %10s %10s\n", "path", "pushes", "pushes/s", "p50", "p99", "cpu/push")
	for _, r := range res {
		fmt.Fprintf(stdout, "%-28s %8d %10.0f %10s %10s %10s\n", r.Name, r.Pushes, r.rate(),
			r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), r.CPU.Round(time.Microsecond))
	}
	var raw, e2e []benchPushResult
	for _, r := range res {
		if r.Name == "apns2 raw" {
			raw = append(raw, r)
		} else {
			e2e = append(e2e, r)
		}
	}
	for i := range min(len(raw), len(e2e)) {
		fmt.Fprintf(stdout, "round %d: end to end / raw = %.2f (cpu per push, raw / end to end: %.2f)\n", i+1,
			e2e[i].rate()/raw[i].rate(), raw[i].CPU.Seconds()/e2e[i].CPU.Seconds())
	}
	return nil
}

// benchPush runs rounds of (raw, end to end) against one APNS test server.
// With cpuprofile set, the measured rounds (both paths) are profiled.
func benchPush(ctx context.Context, pushes, conc, rounds int, cpuprofile string) ([]benchPushResult, error) {
	dir, err := os.MkdirTemp("", "pushd-bench-push-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// The server checks every request as Apple does (ES256 provider token
	// included) and keeps none: both paths' requests are answered alike.
	srv, err := newAPNSProvider(dir, apnstest.Options{Discard: true})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	cfg := defaultPushFileConfig()
	srv.configure(&cfg)

	warm := min(pushes, 500)
	e, err := newBenchPushEnv(cfg, filepath.Join(dir, "db"), warm+rounds*pushes, conc)
	if err != nil {
		return nil, err
	}
	defer e.close()
	raw := apns2.NewTokenClient(&token.Token{AuthKey: srv.Key, KeyID: cfg.APNS.KeyID, TeamID: cfg.APNS.TeamID})
	// The test server's client (its CA), with the request timeout apns2's
	// own client has.
	raw.Host, raw.HTTPClient = srv.URL, srv.Client()
	raw.HTTPClient.Timeout = apns2.HTTPClientTimeout
	// Warm both paths (TLS handshakes, JWT, badger memtables).
	if _, err := benchRaw(ctx, raw, cfg.APNS.Topic, warm, conc); err != nil {
		return nil, err
	}
	if _, err := e.run(ctx, warm); err != nil {
		return nil, err
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	var out []benchPushResult
	// The process's CPU time per push counts the shared test server in
	// both paths alike; it varies less than the rates on a busy machine.
	measure := func(run func() (benchPushResult, error)) error {
		cpu := bench.SelfCPU()
		r, err := run()
		if err != nil {
			return err
		}
		r.CPU = (bench.SelfCPU() - cpu) / time.Duration(max(r.Pushes, 1))
		out = append(out, r)
		return nil
	}
	for range rounds {
		if err := measure(func() (benchPushResult, error) { return benchRaw(ctx, raw, cfg.APNS.Topic, pushes, conc) }); err != nil {
			return nil, err
		}
		if err := measure(func() (benchPushResult, error) { return e.run(ctx, pushes) }); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// benchRaw is the ceiling: the request the dispatcher sends (same topic,
// headers, encrypted body of the same size), sent by apns2 directly.
func benchRaw(ctx context.Context, c *apns2.Client, topic string, pushes, conc int) (benchPushResult, error) {
	var k [payload.KeySize]byte
	sealed, err := payload.Prepare(&k, payload.Payload{Type: payload.TypeMessage, From: "bench@localhost", Body: "bench message", Count: 1}, "")
	if err != nil {
		return benchPushResult{}, err
	}
	body, err := payload.APNSBody(payload.ChannelMessage, dispatch.NewTrackingID(), sealed)
	if err != nil {
		return benchPushResult{}, err
	}
	msg := apns.DefaultConfig().Message // the channel of the end-to-end path's pushes
	lat := make([]time.Duration, pushes)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= pushes {
					return
				}
				t0 := time.Now()
				n := &apns2.Notification{DeviceToken: benchToken(i), Topic: topic, Payload: body, Priority: msg.Priority,
					PushType: msg.PushType, CollapseID: msg.CollapseID, Expiration: time.Now().Add(msg.Expiration),
					ApnsID: dispatch.NewTrackingID()}
				resp, err := c.PushWithContext(ctx, n)
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("apns %d %s", resp.StatusCode, resp.Reason)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return benchPushResult{}, fmt.Errorf("bench push raw: %w", firstErr)
	}
	return summarise("apns2 raw", lat, time.Since(start)), nil
}

// benchPushEnv is the push stack of `pushd serve` on a fresh badger
// directory, with one registered device per push so that coalescing and
// the per-device rate limit (which exist to hold pushes back) stay out of
// the throughput figure. The devices are registered before the first run:
// up to the registry's cache size (65 536, the default rounds take 60 500)
// the registry check finds each in memory, as it finds any device
// registered or pushed lately; past it some checks read badger.
type benchPushEnv struct {
	db   *store.DB
	s    *pushStack
	comp *component.Component
	devs []benchDevice
	conc int
	used int

	mu    sync.Mutex
	start map[string]benchWait // token → publish time and waiter
	lat   []time.Duration
}

// benchDevice is what a publisher needs of a registration (the bench keeps
// no more: its own live heap is garbage-collected with the path's).
type benchDevice struct{ node, secret, token string }

type benchWait struct {
	t0   time.Time
	done chan struct{}
}

func newBenchPushEnv(cfg pushFileConfig, dir string, devices, conc int) (*benchPushEnv, error) {
	db, err := store.Open(store.Config{Dir: dir, Domain: "localhost", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	e := &benchPushEnv{db: db, conc: conc, start: map[string]benchWait{}}
	// The node's log at its default level (info: one line per publish and
	// per attempt), formatted and discarded.
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e.s, err = startPushWith(cfg, db, pushOptions{Domain: "push.localhost", Secret: "bench", Router: "unused:0", Logger: log},
		func(c *dispatch.Config) { c.CoalesceWindow, c.DeviceBurst = 0, 1<<30 }, e.watch)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	e.comp = e.s.component
	var k [payload.KeySize]byte
	_, _ = rand.Read(k[:])
	e.devs = make([]benchDevice, 0, devices)
	for i := range devices {
		d, _, err := e.s.registry.Register(component.RegisterRequest{Account: fmt.Sprintf("bench%d@localhost", i), DeviceID: "phone",
			Provider: dispatch.APNS, Token: benchToken(1_000_000 + i), Key: &k, Kind: "mobile", Command: "p2"})
		if err != nil {
			e.close()
			return nil, err
		}
		e.devs = append(e.devs, benchDevice{node: d.Node, secret: d.Secret, token: d.Token})
	}
	return e, nil
}

// watch is the provider wrapper: it records when each push's answer came.
func (e *benchPushEnv) watch(p dispatch.Provider) dispatch.Provider { return benchProvider{p, e} }

type benchProvider struct {
	dispatch.Provider
	e *benchPushEnv
}

func (p benchProvider) Send(ctx context.Context, push dispatch.Push) dispatch.Outcome {
	out := p.Provider.Send(ctx, push)
	now := time.Now()
	e := p.e
	e.mu.Lock()
	if w, ok := e.start[push.Registration.Token]; ok && out.Result == dispatch.Delivered {
		delete(e.start, push.Registration.Token)
		e.lat = append(e.lat, now.Sub(w.t0))
		close(w.done)
	}
	e.mu.Unlock()
	return out
}

// run publishes n pushes from conc publishers, each waiting for its push's
// answer before the next publish: conc pushes in flight, as many as the raw
// path has, so rates and latencies compare.
func (e *benchPushEnv) run(ctx context.Context, n int) (benchPushResult, error) {
	if e.used+n > len(e.devs) {
		return benchPushResult{}, errors.New("bench push: out of devices")
	}
	devs := e.devs[e.used : e.used+n]
	e.used += n
	e.mu.Lock()
	e.lat = make([]time.Duration, 0, n)
	e.mu.Unlock()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < e.conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pub := newBenchPublisher()
			timeout := time.NewTimer(time.Minute)
			defer timeout.Stop()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				d := devs[i]
				iq := pub.next("b"+strconv.Itoa(i), d.node, d.secret)
				w := benchWait{t0: time.Now(), done: make(chan struct{})}
				e.mu.Lock()
				e.start[d.token] = w
				e.mu.Unlock()
				if r := e.comp.Handle(ctx, iq); r == nil || r.Get("type") != "result" {
					failed.Store(fmt.Sprint(r))
					return
				}
				timeout.Reset(time.Minute)
				select {
				case <-w.done:
				case <-timeout.C:
					failed.Store("no answer within a minute")
					return
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		return benchPushResult{}, fmt.Errorf("bench push: publish refused: %v", f)
	}
	elapsed := time.Since(start)
	e.mu.Lock()
	lat := e.lat
	e.mu.Unlock()
	return summarise("publish→apns (end to end)", lat, elapsed), nil
}

func (e *benchPushEnv) close() {
	if e.s != nil {
		e.s.close()
	}
	_ = e.db.Close()
}

// benchPublisher is one publisher's publish stanza, built once and
// addressed anew for every push. The stanza is what the router's XML
// parser would hand over (the link's parsing is not in the figure); a
// fresh tree per push would be the harness's garbage, collected on the
// path's time. Handle keeps nothing of the stanza it is given.
type benchPublisher struct {
	iq, publish, secret *stanza.Element
}

func newBenchPublisher() *benchPublisher {
	const nsData, nsPubsub = "jabber:x:data", "http://jabber.org/protocol/pubsub"
	b := &benchPublisher{iq: benchPublish("id", "node", "secret")}
	ps := b.iq.FirstElement()
	b.publish = ps.Child(nsPubsub, "publish")
	for _, f := range ps.Child(nsPubsub, "publish-options").FirstElement().Elements() {
		if f.Get("var") == "secret" {
			b.secret = f.FirstElement()
		}
	}
	return b
}

// next returns the publish of push id to node with secret.
func (b *benchPublisher) next(id, node, secret string) *stanza.Element {
	b.iq.Set("id", id)
	b.publish.Set("node", node)
	b.secret.Children[0] = stanza.Text(secret)
	return b.iq
}

// benchPublish is the publish a router sends: XEP-0357 with the summary
// form and the secret in publish-options, as pushd's own router does.
func benchPublish(id, node, secret string) *stanza.Element {
	const nsData, nsPubsub = "jabber:x:data", "http://jabber.org/protocol/pubsub"
	field := func(v, val string) *stanza.Element {
		return stanza.New(nsData, "field", "var", v).Add(stanza.New(nsData, "value").AddText(val))
	}
	sum := stanza.New(nsData, "x", "type", "submit").Add(field("FORM_TYPE", "urn:xmpp:push:summary"),
		field("message-count", "1"), field("last-message-sender", "bench@localhost/desk"), field("last-message-body", "bench message"))
	ps := stanza.New(nsPubsub, "pubsub").Add(
		stanza.New(nsPubsub, "publish", "node", node).Add(
			stanza.New(nsPubsub, "item").Add(stanza.New(stanza.NSPush, "notification").Add(sum))),
		stanza.New(nsPubsub, "publish-options").Add(stanza.New(nsData, "x", "type", "submit").Add(
			field("FORM_TYPE", "http://jabber.org/protocol/pubsub#publish-options"), field("secret", secret))))
	return stanza.New(stanza.NSClient, "iq", "type", "set", "id", id, "from", "localhost", "to", "push.localhost").Add(ps)
}

func benchToken(i int) string { return fmt.Sprintf("%064x", i) }

func summarise(name string, lat []time.Duration, elapsed time.Duration) benchPushResult {
	r := benchPushResult{Name: name, Pushes: len(lat), Elapsed: elapsed}
	r.P50, r.P99, _ = percentiles(lat)
	return r
}

// percentiles sorts lat and returns its median, 99th percentile and
// maximum (zero for none).
func percentiles(lat []time.Duration) (p50, p99, top time.Duration) {
	slices.Sort(lat)
	n := len(lat)
	if n == 0 {
		return 0, 0, 0
	}
	return lat[n/2], lat[min(n-1, n*99/100)], lat[n-1]
}
