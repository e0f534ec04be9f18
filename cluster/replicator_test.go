package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"pushd/cluster/record"
)

// The kinds of these tests are defined here, as an owner package defines
// its own: the cluster carries them without knowing them.
const (
	kindTestAppend  Kind = 1001 // key device; body seq, stanza
	kindTestTrim    Kind = 1002 // key device; body through
	kindTestSession Kind = 1003 // key device; body SMID
	kindTestAccount Kind = 1004 // key user; body credentials
)

func appendRec(dev string, seq uint64) Record {
	return appendRecBody(dev, seq, []byte(fmt.Sprintf("<message id='%d'/>", seq)))
}

func appendRecBody(dev string, seq uint64, stanza []byte) Record {
	return Record{Kind: kindTestAppend, Key: dev, Body: record.AppendBytes(record.AppendUvarint(nil, seq), stanza)}
}

func trimRec(dev string, through uint64) Record {
	return Record{Kind: kindTestTrim, Key: dev, Body: record.AppendUvarint(nil, through)}
}

func sessionRec(dev, smid string) Record {
	return Record{Kind: kindTestSession, Key: dev, Body: []byte(smid)}
}

func accountRec(user string, data []byte) Record {
	return Record{Kind: kindTestAccount, Key: user, Body: data}
}

// memApplier is an idempotent Applier: queues by (device, seq), the order
// of first application, and how many records arrived in all.
type memApplier struct {
	Kinds
	mu       sync.Mutex
	queues   map[string]map[uint64][]byte
	order    []string // "device#seq" in first-applied order
	sessions map[string]string
	accounts map[string][]byte
	applied  int // every append entry, duplicates included
	fail     error
}

func newMemApplier() *memApplier {
	a := &memApplier{queues: map[string]map[uint64][]byte{}, sessions: map[string]string{}, accounts: map[string][]byte{}}
	a.Kinds = Kinds{
		kindTestAppend:  a.applyAppend,
		kindTestTrim:    a.applyTrim,
		kindTestSession: a.applySession,
		kindTestAccount: a.applyAccount,
	}
	return a
}

func (a *memApplier) applyAppend(_ string, r Record) (func() error, error) {
	d := record.NewDecoder(r.Body)
	seq, stanza := d.Uvarint(), d.Bytes()
	if err := d.Err(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return nil, a.fail
	}
	q := a.queues[r.Key]
	if q == nil {
		q = map[uint64][]byte{}
		a.queues[r.Key] = q
	}
	a.applied++
	if _, ok := q[seq]; !ok {
		q[seq] = stanza
		a.order = append(a.order, fmt.Sprintf("%s#%d", r.Key, seq))
	}
	return nil, nil
}

func (a *memApplier) applyTrim(_ string, r Record) (func() error, error) {
	d := record.NewDecoder(r.Body)
	through := d.Uvarint()
	if err := d.Err(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for s := range a.queues[r.Key] {
		if s <= through {
			delete(a.queues[r.Key], s)
		}
	}
	return nil, nil
}

func (a *memApplier) applySession(_ string, r Record) (func() error, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sessions[r.Key] = string(r.Body)
	return nil, nil
}

func (a *memApplier) applyAccount(_ string, r Record) (func() error, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.accounts[r.Key] = r.Body
	// Durable later: the frame is acknowledged once this returns.
	return func() error { return nil }, nil
}

func (a *memApplier) snapshot() (order []string, applied int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.order...), a.applied
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// pair is a sender "p" and a receiver "b" (the backup) over one transport.
type pair struct {
	send, recv *Replicator
	app        *memApplier
	cut        func()             // drop every stream between them
	kill       func()             // crash the receiver
	restart    func() *memApplier // bring the receiver back (empty state)
}

func newPair(t testing.TB, kind string, cfg ReplicatorConfig) *pair {
	t.Helper()
	cfg.Logger = quietLogger()
	p := &pair{app: newMemApplier()}
	switch kind {
	case "mem":
		net := NewMemNetwork()
		mk := func(name string, app Applier) *Replicator {
			c := cfg
			c.Name = name
			r, err := NewReplicator(c, net.Transport(name), app)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		p.send = mk("p", nil)
		p.recv = mk("b", p.app)
		p.cut = func() { net.Cut("p", "b") }
		p.kill = func() { p.recv.Close() }
		p.restart = func() *memApplier {
			p.app = newMemApplier()
			p.recv = mk("b", p.app)
			return p.app
		}
	case "tcp":
		var mu sync.Mutex
		addrs := map[string]string{}
		resolve := func(n string) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			if a, ok := addrs[n]; ok {
				return a, nil
			}
			return "", errors.New("unknown")
		}
		key := []byte("0123456789abcdef0123456789abcdef")
		mk := func(name string, app Applier) *Replicator {
			tr, err := ListenTCP(TCPConfig{Name: name, BindAddr: "127.0.0.1:0", Resolve: resolve, SecretKey: key, Label: "test", Logger: cfg.Logger})
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			addrs[name] = tr.Addr().String()
			mu.Unlock()
			c := cfg
			c.Name = name
			r, err := NewReplicator(c, tr, app)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		p.send = mk("p", nil)
		p.recv = mk("b", p.app)
		p.cut = func() {
			p.send.mu.Lock()
			l := p.send.links["b"]
			p.send.mu.Unlock()
			if l != nil {
				l.mu.Lock()
				s := l.stream
				l.mu.Unlock()
				if s != nil {
					s.Close()
				}
			}
		}
		p.kill = func() { p.recv.Close() }
		p.restart = func() *memApplier {
			p.app = newMemApplier()
			p.recv = mk("b", p.app)
			return p.app
		}
	}
	t.Cleanup(func() { p.send.Close(); p.recv.Close() })
	return p
}

func TestReplicatorOrderedAndAcknowledged(t *testing.T) {
	for _, kind := range []string{"mem", "tcp"} {
		t.Run(kind, func(t *testing.T) {
			p := newPair(t, kind, ReplicatorConfig{AckTimeout: 5 * time.Second})
			ctx := context.Background()
			var waits []func() error
			for i := 1; i <= 500; i++ {
				waits = append(waits, p.send.Send(ctx, "b", appendRec("d1", uint64(i)), appendRec("d2", uint64(i))))
			}
			for i, w := range waits {
				if err := w(); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
			}
			order, applied := p.app.snapshot()
			if len(order) != 1000 || applied != 1000 {
				t.Fatalf("applied %d (%d distinct), want 1000", applied, len(order))
			}
			for i := 0; i < 500; i++ {
				if order[2*i] != fmt.Sprintf("d1#%d", i+1) || order[2*i+1] != fmt.Sprintf("d2#%d", i+1) {
					t.Fatalf("order broken at %d: %v", i, order[2*i:2*i+2])
				}
			}
			// Other record kinds and the lag report.
			w := p.send.Send(ctx, "b", sessionRec("u@x/r", "sm1"), trimRec("d1", 250), accountRec("u@x", []byte("k")))
			if err := w(); err != nil {
				t.Fatal(err)
			}
			p.app.mu.Lock()
			if len(p.app.queues["d1"]) != 250 || p.app.sessions["u@x/r"] != "sm1" || p.app.accounts["u@x"] == nil {
				t.Errorf("state after session/trim/account: %d entries, %+v", len(p.app.queues["d1"]), p.app.sessions)
			}
			p.app.mu.Unlock()
			lag := p.send.Lag()
			if len(lag) != 1 || lag[0].UnackedRecords != 0 || lag[0].AckedRecords != 1003 || !lag[0].Connected {
				t.Errorf("lag %+v", lag)
			}
		})
	}
}

// Streams dropped under load: everything arrives once, in order.
func TestReplicatorResendsAfterDroppedConnection(t *testing.T) {
	for _, kind := range []string{"mem", "tcp"} {
		t.Run(kind, func(t *testing.T) {
			p := newPair(t, kind, ReplicatorConfig{AckTimeout: 10 * time.Second, ReconnectMin: time.Millisecond, ReconnectMax: 10 * time.Millisecond})
			ctx := context.Background()
			const n = 3000
			var waits []func() error
			for i := 1; i <= n; i++ {
				waits = append(waits, p.send.Send(ctx, "b", appendRec("d", uint64(i))))
				if i%400 == 0 {
					p.cut()
				}
			}
			for i, w := range waits {
				if err := w(); err != nil {
					t.Fatalf("send %d: %v", i+1, err)
				}
			}
			order, applied := p.app.snapshot()
			if len(order) != n {
				t.Fatalf("%d distinct entries applied, want %d", len(order), n)
			}
			for i, o := range order {
				if o != fmt.Sprintf("d#%d", i+1) {
					t.Fatalf("entry %d is %s", i, o)
				}
			}
			lag := p.send.Lag()
			t.Logf("%s: %d entries, %d applications (receiver dedup by seq), %d frames resent", kind, n, applied, lag[0].ResentFrames)
			if applied != n {
				t.Errorf("a resend reached the applier: %d applications for %d entries", applied, n)
			}
		})
	}
}

// A restarted receiver has forgotten what it applied: the sender resends
// what was unacknowledged and the idempotent applier absorbs repeats.
func TestReplicatorReceiverRestart(t *testing.T) {
	for _, kind := range []string{"mem", "tcp"} {
		t.Run(kind, func(t *testing.T) {
			p := newPair(t, kind, ReplicatorConfig{AckTimeout: 300 * time.Millisecond, ReconnectMin: time.Millisecond, ReconnectMax: 20 * time.Millisecond})
			ctx := context.Background()
			if err := p.send.Send(ctx, "b", appendRec("d", 1))(); err != nil {
				t.Fatal(err)
			}
			p.kill()
			w := p.send.Send(ctx, "b", appendRec("d", 2))
			if err := w(); !errors.Is(err, ErrAckTimeout) || !errors.Is(err, ErrDegraded) {
				t.Fatalf("send to a dead backup: %v, want ErrAckTimeout (degraded)", err)
			}
			if !p.send.Degraded() {
				t.Error("not reported degraded")
			}
			app := p.restart()
			_ = p.send.Send(ctx, "b", appendRec("d", 3))()
			var order []string
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				if order, _ = app.snapshot(); len(order) >= 2 && p.send.Lag()[0].UnackedRecords == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("restarted backup never caught up: %v", order)
				}
			}
			if fmt.Sprint(order) != "[d#2 d#3]" {
				t.Fatalf("restarted backup got %v, want [d#2 d#3]", order)
			}
			// The alarm clears just after the acknowledgement is counted.
			for deadline := time.Now().Add(10 * time.Second); p.send.Degraded(); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("still degraded after the backup acknowledged")
				}
			}
		})
	}
}

func TestReplicatorDegradedModes(t *testing.T) {
	p := newPair(t, "mem", ReplicatorConfig{AckTimeout: 200 * time.Millisecond})
	ctx := context.Background()
	if err := p.send.Send(ctx, "", appendRec("d", 1))(); !errors.Is(err, ErrNoBackup) || !errors.Is(err, ErrDegraded) {
		t.Fatalf("no backup: %v", err)
	}
	if !p.send.Degraded() {
		t.Error("no-backup not reported degraded")
	}
	if err := p.send.Send(ctx, "b", appendRec("d", 1))(); err != nil {
		t.Fatalf("with a backup: %v", err)
	}
	if p.send.Degraded() {
		t.Error("still degraded with a backup")
	}
	// The backup dies, then membership says so: waits fail with ErrPeerGone
	// at once rather than after AckTimeout.
	p.kill()
	w := p.send.Send(ctx, "b", appendRec("d", 2))
	start := time.Now()
	go func() { time.Sleep(20 * time.Millisecond); p.send.PeerGone("b") }()
	if err := w(); !errors.Is(err, ErrPeerGone) && !errors.Is(err, ErrAckTimeout) {
		t.Fatalf("peer gone: %v", err)
	} else {
		t.Logf("peer gone after %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
	// Closed replicator.
	p.send.Close()
	if err := p.send.Send(ctx, "b", appendRec("d", 3))(); !errors.Is(err, ErrReplicatorClosed) {
		t.Fatalf("closed: %v", err)
	}
}

// A backup that stops acknowledging fills its backlog; past the bound a
// Send drops its records at once (degraded) rather than block its caller,
// who holds the router's lock, and the Resyncer hears of it (issue 11:
// a slow backup must not stall routing for everyone).
func TestReplicatorBackpressure(t *testing.T) {
	told := make(chan string, 4)
	p := newPair(t, "mem", ReplicatorConfig{AckTimeout: 100 * time.Millisecond, MaxPendingBytes: 4096, Resyncer: resyncFunc(func(peer string) { told <- peer })})
	p.kill()
	big := appendRecBody("d", 1, make([]byte, 3000))
	_ = p.send.Send(context.Background(), "b", big) // queued: the first always fits
	err := p.send.Send(context.Background(), "b", big)()
	if !errors.Is(err, ErrBackpressure) || !errors.Is(err, ErrDegraded) {
		t.Fatalf("over the bound: %v, want ErrBackpressure (degraded)", err)
	}
	if peer := <-told; peer != "b" {
		t.Fatalf("resync asked for %q, want b", peer)
	}
}

// With FailFast (forwards), a Send to a peer that cannot be reached fails
// at once instead of waiting AckTimeout for it: the router asks where the
// stanza's user lives and tries there (issue 11: a stanza sent to a dead
// primary reaches the new one soon after the takeover).
func TestReplicatorFailFast(t *testing.T) {
	p := newPair(t, "tcp", ReplicatorConfig{AckTimeout: time.Minute, ReconnectMin: time.Millisecond, ReconnectMax: 10 * time.Millisecond, FailFast: true})
	if err := p.send.Send(context.Background(), "b", appendRec("d", 1))(); err != nil {
		t.Fatalf("send to a live peer: %v", err)
	}
	p.kill()
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := p.send.Send(ctx, "b", appendRec("d", uint64(i+2)))()
		cancel()
		if errors.Is(err, ErrUnreachable) {
			return
		}
		if i == 200 {
			t.Fatalf("sends to a dead peer never failed fast: %v", err)
		}
	}
}

type resyncFunc func(peer string)

func (f resyncFunc) Resync(peer string) { f(peer) }

func TestMemTransportIsolate(t *testing.T) {
	net := NewMemNetwork()
	a, b := net.Transport("a"), net.Transport("b")
	defer a.Close()
	defer b.Close()
	net.Isolate("b", true)
	if _, err := a.Dial(context.Background(), "b"); err == nil {
		t.Fatal("dialled an isolated node")
	}
	net.Isolate("b", false)
	s, err := a.Dial(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	r, _ := b.Accept()
	if err := s.WriteFrame([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if p, err := r.ReadFrame(); err != nil || string(p) != "x" || r.Peer() != "a" {
		t.Fatalf("%q %v %s", p, err, r.Peer())
	}
}

func TestTCPTransportRefusesWrongKeyOrLabel(t *testing.T) {
	mk := func(name string, key []byte, label string, resolve func(string) (string, error)) *TCPTransport {
		tr, err := ListenTCP(TCPConfig{Name: name, BindAddr: "127.0.0.1:0", Resolve: resolve, SecretKey: key, Label: label, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	k1 := []byte("0123456789abcdef")
	k2 := []byte("fedcba9876543210")
	srv := mk("srv", k1, "L", func(string) (string, error) { return "", errors.New("x") })
	to := func(string) (string, error) { return srv.Addr().String(), nil }
	for _, tc := range []struct {
		name  string
		key   []byte
		label string
		ok    bool
	}{{"good", k1, "L", true}, {"wrong key", k2, "L", false}, {"no key", nil, "L", false}, {"wrong label", k1, "M", false}} {
		cli := mk("cli-"+tc.name, tc.key, tc.label, to)
		s, err := cli.Dial(context.Background(), "srv")
		if (err == nil) != tc.ok {
			t.Errorf("%s: dial error %v", tc.name, err)
		}
		if s != nil {
			s.Close()
		}
	}
}

// BenchmarkReplicationTCP measures records/s and bytes/s for 1 KiB
// records over loopback TCP with AES-GCM, batching Sends of 16 records and
// keeping a window of waits outstanding, as a router with many streams
// would.
func BenchmarkReplicationTCP(b *testing.B) {
	for _, batch := range []int{1, 16} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			p := newPair(b, "tcp", ReplicatorConfig{AckTimeout: 30 * time.Second})
			ctx := context.Background()
			stanza := make([]byte, 1024)
			window := make(chan func() error, 256)
			done := make(chan error)
			go func() {
				var err error
				for w := range window {
					if e := w(); e != nil && err == nil {
						err = e
					}
				}
				done <- err
			}()
			b.SetBytes(int64(1024 * batch))
			b.ResetTimer()
			seq := uint64(0)
			for i := 0; i < b.N; i++ {
				recs := make([]Record, batch)
				for j := range recs {
					seq++
					recs[j] = appendRecBody("user@example.org/phone", seq, stanza)
				}
				window <- p.send.Send(ctx, "b", recs...)
			}
			close(window)
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
