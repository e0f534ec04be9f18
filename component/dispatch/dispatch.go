// Package dispatch is pushd's one dispatcher (DESIGN rule 3): every push —
// IM summaries from the component, calls from component/sip, later LPNS —
// is a Job submitted here. It owns the push's life after acceptance:
// sealing (component/payload), persistence in badger under "dispatch/"
// until a provider answered (P5), bounded workers per provider, per-device
// coalescing and rate limiting (M3), call pushes ahead of message pushes,
// retries with backoff and jitter on a fresh connection (P3), the
// per-attempt timeout (P4), dead tokens handed back to the registration's
// owner, the push's end told to its producer (Job.Done), the push switch
// that holds every push back while it is off (O2, switch.go), metrics and
// the tracking id in every log line.
//
// It must never hold plaintext personal data beyond Submit (the persisted
// Push carries only ciphertext), never log tokens, JIDs, names or bodies
// (S3), and never talk HTTP itself: providers (component/apns,
// component/fcm) turn a Push into a request and an answer into an Outcome.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"pushd/component/payload"
	"pushd/internal/logline"
)

// Errors of Submit.
var (
	ErrBusy          = errors.New("dispatch: too many pending pushes")
	ErrDuplicate     = errors.New("dispatch: tracking id already accepted")
	ErrClosed        = errors.New("dispatch: closed")
	ErrNoProvider    = errors.New("dispatch: no such provider")
	ErrInvalid       = errors.New("dispatch: invalid job")
	ErrClearPersonal = payload.ErrClearPersonal
)

// Keyspace in the shared badger database.
const (
	prefixJob  = "dispatch/job/"
	prefixDone = "dispatch/done/"
)

// Deps are the dispatcher's collaborators.
type Deps struct {
	// DB is the node's badger database; the dispatcher uses keys under
	// "dispatch/" only.
	DB *badger.DB
	// Providers by name; a Registration's Provider selects one.
	Providers map[ProviderName]Provider
	// DeadToken is told about dead tokens of the registrations of owner ""
	// (OwnerComponent, the component's device registry); other owners
	// register theirs with Route. May be nil in tests.
	DeadToken DeadTokenHook
	// Metrics (may be nil: then nothing is recorded).
	Metrics *Metrics
	// Switch is the push switch (O2; nil: always on). While it is off no
	// push reaches a provider: Submit accepts a job without storing it and
	// its Done hears "disabled", and a push accepted before the switch went
	// off ends so when a worker takes it (from the queue, a backoff, the
	// coalescing window or the store of a previous run). Nothing is kept to
	// send later: the producers decide again (jsm on its next trigger).
	Switch Gate
}

// Dispatcher is the running dispatcher. Safe for concurrent use.
type Dispatcher struct {
	cfg   Config
	db    *badger.DB
	store *committer
	m     *Metrics
	log   *slog.Logger
	lanes map[ProviderName]*lane
	gate  Gate

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	hmu   sync.RWMutex
	hooks map[string]DeadTokenHook // by Registration.Owner

	mu       sync.Mutex
	closed   bool
	pending  int
	inflight map[string]struct{} // tracking ids accepted and not answered
	devices  map[deviceKey]*device
	submits  int
}

// lane is one provider with its queue and workers. The queue is two FIFOs:
// workers take every waiting call push before any message push, whether
// it was just submitted or comes back from a backoff or the rate limiter
// (a call rings for 13 s at most, C4; a summary can wait). ready holds
// one token per queued push: a worker takes a token, then the first push
// in priority order, so a token always finds a push and putting one never
// blocks (capacity ≥ MaxPending ≥ pending ≥ queued).
type lane struct {
	name  ProviderName
	prov  Provider
	ready chan struct{}

	qmu   sync.Mutex
	calls fifo
	msgs  fifo

	mu        sync.Mutex
	lastReset time.Time
}

// put queues p; it never blocks while the dispatcher runs.
func (l *lane) put(ctx context.Context, p *Push) {
	l.qmu.Lock()
	if p.Sealed.Type.IsCall() {
		l.calls.push(p)
	} else {
		l.msgs.push(p)
	}
	l.qmu.Unlock()
	select {
	case l.ready <- struct{}{}:
	case <-ctx.Done():
	}
}

// take returns the first queued push, calls first. The caller holds a
// token from ready, so there is one.
func (l *lane) take() *Push {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	if p := l.calls.pop(); p != nil {
		return p
	}
	return l.msgs.pop()
}

// fifo is a queue of pushes on a slice that is reused once drained and
// compacted when its dead head outgrows the live part.
type fifo struct {
	buf  []*Push
	head int
}

func (q *fifo) push(p *Push) {
	if q.head > 64 && q.head > len(q.buf)/2 {
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, p)
}

func (q *fifo) pop() *Push {
	if q.head == len(q.buf) {
		return nil
	}
	p := q.buf[q.head]
	q.buf[q.head] = nil
	q.head++
	if q.head == len(q.buf) {
		q.buf, q.head = q.buf[:0], 0
	}
	return p
}

// deviceKey names one device channel: provider, channel, token.
type deviceKey struct {
	provider ProviderName
	channel  payload.Channel
	token    string
}

// device is the coalescing and rate-limit state of one device channel.
type device struct {
	lastSent time.Time // last message-channel push released
	held     *Push     // message push waiting for the coalesce window
	tat      time.Time // rate limit: theoretical arrival time (GCRA)
}

// New loads the pushes left pending by a previous run, queues them and
// starts the workers. Close stops them; pending pushes stay persisted.
func New(cfg Config, deps Deps) (*Dispatcher, error) {
	cfg.fill()
	if deps.DB == nil {
		return nil, errors.New("dispatch: no database")
	}
	if len(deps.Providers) == 0 {
		return nil, errors.New("dispatch: no provider")
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{
		cfg: cfg, db: deps.DB, m: deps.Metrics, log: cfg.Logger,
		lanes: map[ProviderName]*lane{}, gate: deps.Switch, ctx: ctx, cancel: cancel,
		inflight: map[string]struct{}{}, devices: map[deviceKey]*device{},
		hooks: map[string]DeadTokenHook{},
	}
	if deps.DeadToken != nil {
		d.hooks[OwnerComponent] = deps.DeadToken
	}
	stored, err := d.load()
	if err != nil {
		cancel()
		return nil, err
	}
	d.store = newCommitter(deps.DB, &d.cfg)
	capacity := max(cfg.MaxPending, len(stored))
	for name, p := range deps.Providers {
		d.lanes[name] = &lane{name: name, prov: p, ready: make(chan struct{}, capacity)}
	}
	for _, p := range stored {
		l, ok := d.lanes[p.Registration.Provider]
		if !ok {
			d.log.Error("dispatch: stored push for unknown provider dropped", "tid", p.TrackingID, "provider", p.Registration.Provider)
			_ = d.forget(p)
			continue
		}
		d.inflight[p.TrackingID] = struct{}{}
		d.pending++
		l.put(ctx, p)
	}
	d.setPending()
	if len(stored) > 0 {
		d.log.Info("dispatch: resuming pending pushes", "count", len(stored))
	}
	for _, l := range d.lanes {
		for range cfg.Workers {
			d.wg.Add(1)
			go d.work(l)
		}
	}
	return d, nil
}

// load reads every persisted push, oldest first.
func (d *Dispatcher) load() ([]*Push, error) {
	var out []*Push
	err := d.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixJob), PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var p Push
			err := it.Item().Value(func(v []byte) error {
				var err error
				p, err = decodePush(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("dispatch: load %s: %w", it.Item().Key(), err)
			}
			out = append(out, &p)
		}
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Accepted.Before(out[j].Accepted) })
	return out, err
}

// Route makes h the dead-token hook of the registrations whose Owner is
// owner (h nil: none), replacing the one it had; owner "" is Deps.DeadToken.
// An owner's hook is told only of its own registrations' dead tokens: a
// SIP binding's dead VoIP token never reaches the component's registry,
// which may hold the same token for the same phone. Safe to call while
// pushes are sent; a dead token of an owner with no hook is logged (without
// the token) and counted in pushd_dispatch_dead_tokens_unrouted_total.
func (d *Dispatcher) Route(owner string, h DeadTokenHook) {
	d.hmu.Lock()
	defer d.hmu.Unlock()
	if h == nil {
		delete(d.hooks, owner)
		return
	}
	d.hooks[owner] = h
}

func (d *Dispatcher) hook(owner string) DeadTokenHook {
	d.hmu.RLock()
	defer d.hmu.RUnlock()
	return d.hooks[owner]
}

// Close stops the workers and waits for attempts in flight. Pushes not yet
// answered stay in the database for the next New.
func (d *Dispatcher) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
	d.store.close()
	return nil
}

// Submit accepts a job: it seals the payload, persists the push and queues
// it. When Submit returns nil the push survives a restart (P5), and
// job.Done (if set) will hear how it ended; when it returns an error, Done
// is never called. It returns the tracking id.
func (d *Dispatcher) Submit(ctx context.Context, job Job) (string, error) {
	tid := job.TrackingID
	fresh := tid == ""
	if fresh {
		tid = NewTrackingID()
	}
	push, l, err := d.accept(tid, job)
	if err != nil {
		d.refused(err)
		return tid, err
	}
	push.fresh = fresh
	if job.Done != nil {
		push.notify = &notify{done: job.Done}
	}

	d.mu.Lock()
	off := false
	switch {
	case d.closed:
		err = ErrClosed
	case !d.enabled():
		off = true
	case d.pending >= d.cfg.MaxPending:
		err = ErrBusy
	default:
		if _, dup := d.inflight[tid]; dup {
			err = ErrDuplicate
		} else {
			d.inflight[tid] = struct{}{}
			d.pending++
		}
	}
	d.mu.Unlock()
	if err != nil {
		d.refused(err)
		return tid, err
	}
	if off {
		d.suppress(ctx, l, push)
		return tid, nil
	}
	op := &writeOp{kind: opNew, tid: tid, val: encodePush(push), fresh: fresh}
	if push.notify != nil {
		op.stored = &push.notify.stored
	}
	started := d.store.start(op)
	if started && fresh {
		// A push whose tracking id Submit made up goes to its worker while
		// its record commits: the commit is off the push's path, and P5
		// holds. The record is queued to the committer before any write
		// the worker makes for the push, so it commits first; a crash
		// before it commits leaves nothing to resend (at most once), and
		// the publisher, not yet answered, was told nothing was accepted.
		// An id given by the caller must first pass the committer's check
		// among the answered ones.
		d.route(l, push)
	}
	err = ErrClosed
	if started {
		err = d.store.wait(op)
	}
	if err != nil {
		if started && fresh {
			// Already routed: the push ends through its worker, which
			// does the bookkeeping; only this caller hears of the failure
			// (its Done stays silent: stored was never set).
			d.log.Error("dispatch: push sent without its record", "tid", tid, "err", err)
			return tid, err
		}
		d.mu.Lock()
		delete(d.inflight, tid)
		d.pending--
		d.mu.Unlock()
		d.refused(err)
		return tid, err
	}
	if d.m != nil {
		d.m.accepted.WithLabelValues(string(l.name)).Inc()
	}
	d.setPending()
	logline.Log(ctx, d.log, slog.LevelDebug, "push accepted", slog.String("tid", tid), slog.String("provider", string(l.name)),
		slog.String("channel", string(push.Channel)), slog.String("type", string(push.Sealed.Type)))
	if !fresh {
		d.route(l, push)
	}
	return tid, nil
}

// accept validates a job and turns it into a Push (sealed, key dropped).
func (d *Dispatcher) accept(tid string, job Job) (*Push, *lane, error) {
	if len(tid) > 128 {
		return nil, nil, fmt.Errorf("%w: tracking id too long", ErrInvalid)
	}
	reg := job.Registration
	l, ok := d.lanes[reg.Provider]
	if !ok {
		return nil, nil, fmt.Errorf("%w: %q", ErrNoProvider, reg.Provider)
	}
	ch := job.Channel
	if ch == "" {
		ch = reg.ChannelFor(job.Payload.Type)
	}
	if !ch.Valid() {
		return nil, nil, fmt.Errorf("%w: channel %q", ErrInvalid, ch)
	}
	if ch == payload.ChannelVoIP && !job.Payload.Type.IsCall() {
		// iOS ends an app that gets a VoIP push and reports no call: only
		// the call family rides the VoIP channel.
		return nil, nil, fmt.Errorf("%w: %q push on the VoIP channel", ErrInvalid, job.Payload.Type)
	}
	if reg.TokenFor(ch) == "" {
		return nil, nil, fmt.Errorf("%w: no token for channel %s", ErrInvalid, ch)
	}
	sealed, err := payload.Prepare(reg.Key, job.Payload, job.Encrypted)
	if err != nil {
		return nil, nil, fmt.Errorf("dispatch: %w", err)
	}
	reg.Key = nil
	return &Push{TrackingID: tid, Registration: reg, Channel: ch, Sealed: sealed, Accepted: d.cfg.Now()}, l, nil
}

func (d *Dispatcher) refused(err error) {
	if d.m == nil {
		return
	}
	reason := "invalid"
	switch {
	case errors.Is(err, ErrBusy):
		reason = "busy"
	case errors.Is(err, ErrDuplicate):
		reason = "duplicate"
	case errors.Is(err, ErrClosed):
		reason = "closed"
	case errors.Is(err, ErrClearPersonal):
		reason = "clear_personal"
	case errors.Is(err, ErrNoProvider):
		reason = "no_provider"
	}
	d.m.refused.WithLabelValues(reason).Inc()
}

// route applies coalescing (message channel) and the per-device rate limit,
// then queues the push, now or later.
func (d *Dispatcher) route(l *lane, p *Push) {
	now := d.cfg.Now()
	key := deviceKey{l.name, p.Channel, p.DeviceToken()}
	var replaced *Push
	var wait time.Duration
	d.mu.Lock()
	d.sweep(now)
	dev := d.devices[key]
	if dev == nil {
		dev = &device{}
		d.devices[key] = dev
	}
	// Only summaries coalesce (M3). A call's pushes ride the message
	// channel where there is no VoIP channel (FCM, APNS in CN, single-
	// channel devices: C7), and must neither wait out the window (C2: at
	// once) nor be replaced by a newer summary, which lost the call.
	if p.Channel == payload.ChannelMessage && !p.Sealed.Type.IsCall() && d.cfg.CoalesceWindow > 0 {
		if dev.held != nil {
			// A release is already scheduled; it will send this newer one.
			// The replaced one ends on a worker, like every push, so that
			// its Done never runs on a submitter's goroutine.
			replaced, dev.held = dev.held, p
			replaced.coalesced = true
			d.mu.Unlock()
			d.enqueue(l, replaced)
			return
		}
		if next := dev.lastSent.Add(d.cfg.CoalesceWindow); now.Before(next) {
			dev.held = p
			d.mu.Unlock()
			d.later(next.Sub(now), func() { d.release(l, key) })
			return
		}
		dev.lastSent = now
	}
	wait = d.rateWait(dev, now)
	d.mu.Unlock()
	if wait > 0 {
		d.later(wait, func() { d.enqueue(l, p) })
		return
	}
	d.enqueue(l, p)
}

// rateWait is a GCRA limiter: DeviceBurst pushes at once, then one per
// DeviceRate. Called with d.mu held.
func (d *Dispatcher) rateWait(dev *device, now time.Time) time.Duration {
	tat := dev.tat
	if tat.Before(now) {
		tat = now
	}
	allow := now.Add(time.Duration(d.cfg.DeviceBurst-1) * d.cfg.DeviceRate)
	wait := tat.Sub(allow)
	dev.tat = tat.Add(d.cfg.DeviceRate)
	return max(wait, 0)
}

// release sends the held message push of a device when its window ends.
func (d *Dispatcher) release(l *lane, key deviceKey) {
	now := d.cfg.Now()
	d.mu.Lock()
	dev := d.devices[key]
	if dev == nil || dev.held == nil {
		d.mu.Unlock()
		return
	}
	p := dev.held
	dev.held, dev.lastSent = nil, now
	wait := d.rateWait(dev, now)
	d.mu.Unlock()
	if wait > 0 {
		d.later(wait, func() { d.enqueue(l, p) })
		return
	}
	d.enqueue(l, p)
}

// sweep forgets idle devices now and then so the map does not grow with
// every device ever pushed. Called with d.mu held.
func (d *Dispatcher) sweep(now time.Time) {
	d.submits++
	if d.submits%1024 != 0 {
		return
	}
	for k, dev := range d.devices {
		if dev.held == nil && now.Sub(dev.lastSent) > d.cfg.CoalesceWindow && now.After(dev.tat) {
			delete(d.devices, k)
		}
	}
}

// later runs f after wait on the injected clock, unless the dispatcher
// closes first (the push then stays persisted for the next start).
func (d *Dispatcher) later(wait time.Duration, f func()) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if d.cfg.Sleep(d.ctx, wait) == nil {
			f()
		}
	}()
}

func (d *Dispatcher) enqueue(l *lane, p *Push) { l.put(d.ctx, p) }

func (d *Dispatcher) work(l *lane) {
	defer d.wg.Done()
	// Each attempt's context hangs off the worker's own, not off d.ctx
	// directly, so that workers do not queue on one parent's lock to add
	// and remove their attempts; Close still cancels them all.
	wctx, cancel := context.WithCancel(d.ctx)
	defer cancel()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-l.ready:
		}
		p := l.take()
		if p.coalesced {
			d.end(l, p, Final{Outcome: outcomeCoalesced, Result: Retry})
			continue
		}
		if !d.enabled() {
			d.countSuppressed(l, p)
			d.end(l, p, Final{Outcome: outcomeDisabled, Result: Retry})
			continue
		}
		d.attempt(wctx, l, p)
	}
}

// attempt makes one provider attempt and acts on the outcome (P3). wctx
// is the worker's context (a child of d.ctx).
func (d *Dispatcher) attempt(wctx context.Context, l *lane, p *Push) {
	p.Attempts++
	actx, cancel := context.WithTimeout(wctx, d.cfg.AttemptTimeout)
	start := d.cfg.Now()
	out := l.prov.Send(actx, *p)
	timedOut := errors.Is(actx.Err(), context.DeadlineExceeded)
	cancel()
	if d.ctx.Err() != nil {
		return // shutting down: the push stays persisted, resent after restart
	}
	if timedOut && out.Result != Delivered {
		out.Result = Retry // P4: no answer in time → next address
	}
	if d.m != nil {
		d.m.attempts.WithLabelValues(string(l.name), out.Result.String(), strconv.Itoa(out.Status)).Inc()
	}
	// One line per attempt, typed attributes: it is on every push's path.
	attrs := make([]slog.Attr, 0, 10)
	attrs = append(attrs, slog.String("tid", p.TrackingID), slog.String("provider", string(l.name)),
		slog.String("channel", string(p.Channel)), slog.Int("attempt", p.Attempts),
		slog.String("outcome", out.Result.String()), slog.Int("status", out.Status),
		slog.String("reason", out.Reason), slog.Duration("took", d.cfg.Now().Sub(start)))
	if out.Err != nil {
		attrs = append(attrs, slog.String("err", out.Err.Error()))
	}
	logAttempt := func(level slog.Level, msg string, extra ...slog.Attr) {
		logline.Log(d.ctx, d.log, level, msg, append(attrs, extra...)...)
	}
	final := Final{TrackingID: p.TrackingID, Result: out.Result, Status: out.Status, Reason: out.Reason}
	switch out.Result {
	case Delivered:
		logAttempt(slog.LevelInfo, "push attempt")
		final.Outcome = outcomeDelivered
		d.end(l, p, final)
	case Dead:
		logAttempt(slog.LevelWarn, "push attempt")
		// The owner hears first, so that once the push is no longer
		// pending (and its producer is told) its token is gone too.
		d.deadToken(l, p)
		final.Outcome = outcomeDead
		d.end(l, p, final)
	case Retry:
		// Give up once the push is too old, or would be by its next
		// attempt: a call's producer learns at once that it will not ring.
		age := d.cfg.Now().Sub(p.Accepted)
		wait := d.cfg.backoff(p.Attempts)
		if p.Attempts >= d.cfg.MaxAttempts || age+wait >= d.cfg.maxAge(p) {
			logAttempt(slog.LevelError, "push attempt; giving up")
			final.Outcome = outcomeExpired
			d.end(l, p, final)
			return
		}
		logAttempt(slog.LevelWarn, "push attempt; will retry", slog.Duration("backoff", wait))
		if err := d.persist(p); err != nil {
			d.log.Error("dispatch: persist attempt count", "tid", p.TrackingID, "err", err)
		}
		d.resetConnections(l)
		d.later(wait, func() { d.enqueue(l, p) })
	default:
		logAttempt(slog.LevelError, "push attempt")
		final.Outcome = outcomeFatal
		d.end(l, p, final)
	}
}

// deadToken tells the owner of p's registration that the token p went to
// is dead (P3), or logs and counts it when that owner has no hook.
func (d *Dispatcher) deadToken(l *lane, p *Push) {
	owner := p.Registration.Owner
	h := d.hook(owner)
	if h == nil {
		d.log.Warn("dead token of an owner with no hook: not removed", "tid", p.TrackingID, "provider", l.name,
			"channel", p.Channel, "owner", owner)
		if d.m != nil {
			d.m.unrouted.WithLabelValues(owner).Inc()
		}
		return
	}
	dead := DeadToken{Registration: p.Registration, Channel: p.Channel, Token: p.DeviceToken()}
	if err := h.DeadToken(d.ctx, dead); err != nil {
		d.log.Error("dead token hook failed", "tid", p.TrackingID, "provider", l.name, "channel", p.Channel,
			"owner", owner, "err", err)
	}
}

// resetConnections asks the provider for fresh connections, at most once
// per ResetInterval.
func (d *Dispatcher) resetConnections(l *lane) {
	now := d.cfg.Now()
	l.mu.Lock()
	due := l.lastReset.IsZero() || now.Sub(l.lastReset) >= d.cfg.ResetInterval
	if due {
		l.lastReset = now
	}
	l.mu.Unlock()
	if due {
		l.prov.Reset()
	}
}

func (d *Dispatcher) persist(p *Push) error {
	return d.store.do(&writeOp{kind: opUpdate, tid: p.TrackingID, val: encodePush(p)})
}

// end ends a push on its worker: removes it from the store, remembers its
// tracking id for DoneTTL unless it was made up here (nobody can submit it
// again), and records the final outcome; the push stops being pending once
// that is committed. Without a Done the worker does not wait for the
// commit. With one, it waits, then tells the producer: the answer is
// committed before the producer acts on it, and the Done runs on this
// worker, never on the committer (which every push waits for).
func (d *Dispatcher) end(l *lane, p *Push, f Final) {
	f.TrackingID = p.TrackingID
	op := &writeOp{kind: opFinish, tid: p.TrackingID, val: []byte(f.Outcome)}
	if p.fresh {
		op = &writeOp{kind: opForget, tid: p.TrackingID}
	}
	n := p.notify
	if n == nil {
		d.store.async(op, func(err error) { d.finished(l, p, f.Outcome, err) })
		return
	}
	err := d.store.do(op)
	d.finished(l, p, f.Outcome, err)
	// stored is set when the push's own record committed, which came
	// before this commit; unset, Submit returned an error instead.
	if n.stored.Load() {
		n.done(f)
	}
}

// finished is end's bookkeeping once the answer is committed (err nil)
// or could not be.
func (d *Dispatcher) finished(l *lane, p *Push, outcome string, err error) {
	d.mu.Lock()
	if err == nil {
		delete(d.inflight, p.TrackingID)
	}
	// else the job record may still be stored: the tracking id stays in
	// inflight so that it is refused as a duplicate (P5) until a restart
	// loads the record and sends it again, the only resend that can follow.
	d.pending--
	d.mu.Unlock()
	if err != nil {
		d.log.Error("dispatch: record answer", "tid", p.TrackingID, "err", err)
	}
	d.setPending()
	if d.m != nil {
		kind := kindOf(p)
		d.m.final.WithLabelValues(string(l.name), outcome, kind).Inc()
		d.m.latency.WithLabelValues(string(l.name), outcome, kind).Observe(d.cfg.Now().Sub(p.Accepted).Seconds())
	}
	if outcome == outcomeCoalesced {
		d.log.Info("push coalesced into a newer one", "tid", p.TrackingID, "provider", l.name)
	}
}

// enabled reports whether the push switch lets pushes go (O2).
func (d *Dispatcher) enabled() bool { return d.gate == nil || d.gate.Enabled() }

// suppress ends a push submitted while the switch is off: nothing is
// stored (there is nothing to resend after a restart) and its Done hears
// "disabled" on a goroutine of its own, never the submitter's.
func (d *Dispatcher) suppress(ctx context.Context, l *lane, p *Push) {
	d.countSuppressed(l, p)
	logline.Log(ctx, d.log, slog.LevelDebug, "push not sent: push switch off", slog.String("tid", p.TrackingID),
		slog.String("provider", string(l.name)), slog.String("type", string(p.Sealed.Type)))
	if p.notify == nil {
		return
	}
	f := Final{TrackingID: p.TrackingID, Outcome: outcomeDisabled, Result: Retry}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		p.notify.done(f)
	}()
}

func (d *Dispatcher) countSuppressed(l *lane, p *Push) {
	if d.m != nil {
		d.m.suppressed.WithLabelValues(string(l.name), kindOf(p)).Inc()
	}
}

func kindOf(p *Push) string {
	if p.Sealed.Type.IsCall() {
		return kindCall
	}
	return kindMessage
}

// forget drops a stored push that cannot be sent.
func (d *Dispatcher) forget(p *Push) error {
	return d.store.do(&writeOp{kind: opForget, tid: p.TrackingID})
}

func (d *Dispatcher) setPending() {
	if d.m == nil {
		return
	}
	d.mu.Lock()
	n := d.pending
	d.mu.Unlock()
	d.m.pending.Set(float64(n))
}

// Pending returns the number of accepted pushes not yet answered.
func (d *Dispatcher) Pending() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pending
}
