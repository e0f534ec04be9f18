package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"pushd/cluster/record"
)

// Errors of Replicator.Send's wait. Every "degraded" error wraps
// ErrDegraded: the caller acknowledges the sender's stanza anyway, on
// local durability alone (DESIGN rule 2), and the Replicator has logged
// the alarm and raised pushd_cluster_replication_degraded.
var (
	ErrDegraded = errors.New("cluster: replication degraded, local-durable only")
	// ErrNoBackup: Send was given no backup (a cluster of one).
	ErrNoBackup = fmt.Errorf("%w: no live backup", ErrDegraded)
	// ErrAckTimeout: the backup did not acknowledge within AckTimeout. The
	// records stay queued and reach it when it answers again.
	ErrAckTimeout = fmt.Errorf("%w: backup did not acknowledge in time", ErrDegraded)
	// ErrPeerGone: the backup was declared dead or left (PeerGone) before
	// it acknowledged; the records for it are dropped.
	ErrPeerGone = fmt.Errorf("%w: backup left the cluster", ErrDegraded)
	// ErrBackpressure: the peer's unacknowledged records filled
	// MaxPendingBytes until Send's context ended; the records were not
	// queued and the Resyncer was told.
	ErrBackpressure = fmt.Errorf("%w: replication backlog full", ErrDegraded)
	// ErrUnreachable: with FailFast, the peer could not be reached the last
	// time the link tried; nothing was queued.
	ErrUnreachable = errors.New("cluster: peer unreachable")
	// ErrReplicatorClosed: Close was called.
	ErrReplicatorClosed = errors.New("cluster: replicator closed")
)

// ReplicatorConfig configures a Replicator. Zero fields take the defaults
// of DefaultReplicatorConfig.
type ReplicatorConfig struct {
	// Name is this node's name (required).
	Name string
	// AckTimeout is the bounded wait of DESIGN rule 2: how long a Send's
	// wait lasts for the backup's acknowledgement before it returns
	// ErrAckTimeout (default 2 s: longer than a loopback or LAN round trip
	// under load by two orders of magnitude, shorter than the ~3 s a dead
	// backup takes to be declared dead, so a sender waits at most about
	// that long once).
	AckTimeout time.Duration
	// MaxPendingBytes bounds the unacknowledged records kept per peer
	// (default 64 MiB, one device queue's worth of M9): past it Send waits
	// for room at most MaxBlock, then drops the records (ErrBackpressure,
	// degraded) and tells the Resyncer.
	MaxPendingBytes int
	// FailFast: a Send to a peer whose last connection attempt failed fails
	// at once with ErrUnreachable instead of waiting for the link to come
	// back, up to AckTimeout (default false). For forwarded stanzas: their
	// sender asks the cluster where the user lives and tries again, so a
	// dead primary costs a placement lookup per try, not AckTimeout.
	FailFast bool
	// MaxBlock bounds how long a Send waits for room in a full backlog
	// (default 0: not at all). Callers submit records while they hold
	// their own locks (the router's, to keep records in routing order), so
	// a slow peer that made them wait would stall every sender of the
	// node, not only those whose backup it is; dropping and resyncing
	// costs that peer's users a full copy later instead.
	MaxBlock time.Duration
	// MaxFrame bounds the records carried by one frame (default 1 MiB); a
	// larger Send is split over several frames. Must stay below the
	// transport's frame limit.
	MaxFrame int
	// ReconnectMin and ReconnectMax bound the backoff between attempts to
	// reach a peer (default 50 ms doubling to 2 s, with jitter).
	ReconnectMin, ReconnectMax time.Duration
	// Resyncer hears of records dropped by backpressure (default none).
	Resyncer Resyncer
	Logger   *slog.Logger // default slog.Default()
	Metrics  *Metrics     // default unregistered
}

// DefaultReplicatorConfig documents the defaults.
func DefaultReplicatorConfig() ReplicatorConfig {
	return ReplicatorConfig{
		AckTimeout:      2 * time.Second,
		MaxPendingBytes: 64 << 20,
		MaxFrame:        1 << 20,
		ReconnectMin:    50 * time.Millisecond,
		ReconnectMax:    2 * time.Second,
	}
}

// Replicator streams records from this node to its peers and applies the
// records its peers stream to it.
//
// Protocol (version 2), one stream per (sender, receiver) pair, dialled by
// the sender. Messages are transport frames whose first byte is the kind:
//
//	'H' version, epoch          sender → receiver, first
//	'W' version, applied        receiver → sender, answer to H
//	'D' seq, record...          sender → receiver; records as record.Append
//	                            writes them: kind, key, body
//	'A' seq                     receiver → sender: every D up to seq applied
//
// (integers are uvarints). seq numbers the frames a sender sent a peer
// since its epoch (a random number per link: a process, or a peer seen
// again after PeerGone, starts a new one); the
// receiver remembers, per sender, the epoch and the last seq it applied,
// answers W with it, and skips D frames at or below it. On a new stream the
// sender drops what W says was applied and resends every other
// unacknowledged frame in order, so a dropped connection neither loses nor
// repeats anything; a receiver that restarted (and forgot) gets the frames
// again and relies on the Applier's idempotence.
//
// Safe for concurrent use.
type Replicator struct {
	cfg ReplicatorConfig
	log *slog.Logger
	m   *Metrics
	tr  Transport
	app Applier

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	links     map[string]*link
	inbound   map[string]*inState
	closed    bool
	noBackup  bool
	degradedN int // links currently degraded, plus one while noBackup
}

// protoVersion 2 added the HandoverEnd record and a SessionRecord's
// AckedSeq (where version 1 had an unused Sent) and live sessions
// (Suspended false); version 3 the offline store's records; version 4
// made a record a kind, a key and a body (package record), the kinds
// keeping version 3's type numbers, so that a kind is added without a
// new version (issue 11). An older peer is refused rather than misread.
const protoVersion = 4

const (
	msgHello   = 'H'
	msgWelcome = 'W'
	msgData    = 'D'
	msgAck     = 'A'
)

// NewReplicator starts a Replicator over t, applying what peers send
// through app (nil: this node refuses to be a backup, every stream it
// accepts is closed). It owns t from now on and closes it in Close.
func NewReplicator(cfg ReplicatorConfig, t Transport, app Applier) (*Replicator, error) {
	if cfg.Name == "" {
		return nil, errors.New("cluster: replicator: empty node name")
	}
	def := DefaultReplicatorConfig()
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = def.AckTimeout
	}
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = def.MaxPendingBytes
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = def.MaxFrame
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = def.ReconnectMin
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = max(def.ReconnectMax, cfg.ReconnectMin)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	r := &Replicator{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "cluster"),
		m:       cfg.Metrics,
		tr:      t,
		app:     app,
		links:   make(map[string]*link),
		inbound: make(map[string]*inState),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.wg.Add(1)
	go r.acceptLoop()
	return r, nil
}

// Send hands records for peer (the users' backup) to the replication
// channel and returns at once, like queue.AppendAsync. Records sent to one
// peer are applied there in the order of the Send calls (callers that
// need an order between them must call Send in that order, e.g. under
// the lock that ordered the writes).
//
// wait returns nil once the peer acknowledged that it applied every one of
// the records; an error wrapping ErrDegraded when it cannot say so within
// AckTimeout of the Send (the caller then goes on local-durable only);
// ctx.Err() when ctx ends first. An empty peer gives ErrNoBackup at once.
//
// Send blocks only while the peer's unacknowledged records exceed
// MaxPendingBytes, and at most MaxBlock or until ctx ends.
func (r *Replicator) Send(ctx context.Context, peer string, recs ...Record) (wait func() error) {
	if peer == "" {
		r.setNoBackup(true)
		r.m.degraded.WithLabelValues("no-backup").Inc()
		return errWait(ErrNoBackup)
	}
	r.setNoBackup(false)
	if len(recs) == 0 {
		return errWait(nil)
	}
	if peer == r.cfg.Name {
		return errWait(fmt.Errorf("cluster: replicate to self (%s)", peer))
	}
	start := time.Now()
	frames, nbytes := r.encode(recs)
	l, err := r.link(peer)
	if err != nil {
		return errWait(err)
	}
	if r.cfg.FailFast && l.isUnreachable() {
		return errWait(ErrUnreachable)
	}
	var last *frame
	bounded, cancel := context.WithTimeout(ctx, r.cfg.MaxBlock)
	defer cancel()
	for _, f := range frames {
		if err := l.enqueue(bounded, f, start); err != nil {
			if errors.Is(err, ErrBackpressure) {
				r.m.degraded.WithLabelValues("backpressure").Inc()
				r.log.Error("alarm: replication backlog full, records dropped, backup needs a resync",
					"alarm", "cluster.replication.backpressure", "severity", "error", "peer", peer)
				if r.cfg.Resyncer != nil {
					r.cfg.Resyncer.Resync(peer)
				}
			}
			return errWait(err)
		}
		last = f
	}
	r.m.recordsSent.Add(float64(len(recs)))
	r.m.bytesSent.Add(float64(nbytes))
	deadline := start.Add(r.cfg.AckTimeout)
	return func() error {
		select {
		case <-last.done:
			return last.err
		default:
		}
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case <-last.done:
			return last.err
		case <-t.C:
			l.markDegraded()
			r.m.degraded.WithLabelValues("ack-timeout").Inc()
			return ErrAckTimeout
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Broadcast sends recs to every peer (accounts, replicated to every
// node); wait joins the peers' answers. Peers equal to this node are
// skipped.
func (r *Replicator) Broadcast(ctx context.Context, peers []string, recs ...Record) (wait func() error) {
	var waits []func() error
	for _, p := range peers {
		if p != r.cfg.Name && p != "" {
			waits = append(waits, r.Send(ctx, p, recs...))
		}
	}
	return func() error {
		var errs []error
		for _, w := range waits {
			errs = append(errs, w())
		}
		return errors.Join(errs...)
	}
}

// PeerGone drops everything queued for peer and fails the waits on it
// with ErrPeerGone. The Cluster calls it when memberlist declares peer
// dead or left; the next Send to peer starts afresh.
func (r *Replicator) PeerGone(peer string) {
	r.mu.Lock()
	l := r.links[peer]
	delete(r.links, peer)
	r.mu.Unlock()
	if l != nil {
		l.stop(ErrPeerGone)
	}
}

// Close stops every stream, fails pending waits with ErrReplicatorClosed
// and closes the transport.
func (r *Replicator) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	links := r.links
	r.links = nil
	r.mu.Unlock()
	r.cancel()
	for _, l := range links {
		l.stop(ErrReplicatorClosed)
	}
	err := r.tr.Close()
	r.wg.Wait()
	return err
}

func errWait(err error) func() error { return func() error { return err } }

// encode packs recs into D frames of at most MaxFrame bytes of records
// (a single larger record gets a frame of its own). seq is filled in at
// enqueue.
func (r *Replicator) encode(recs []Record) ([]*frame, int) {
	var frames []*frame
	var cur *frame
	total := 0
	for _, rec := range recs {
		if cur != nil && len(cur.body) >= r.cfg.MaxFrame {
			frames = append(frames, cur)
			cur = nil
		}
		if cur == nil {
			cur = &frame{done: make(chan struct{})}
		}
		n := len(cur.body)
		cur.body = record.Append(cur.body, rec)
		cur.records++
		total += len(cur.body) - n
	}
	if cur != nil {
		frames = append(frames, cur)
	}
	return frames, total
}

func (r *Replicator) link(peer string) (*link, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrReplicatorClosed
	}
	l := r.links[peer]
	if l == nil {
		var e [8]byte
		_, _ = rand.Read(e[:])
		l = &link{
			r:     r,
			epoch: binary.BigEndian.Uint64(e[:]) | 1,
			peer:  peer,
			kick:  make(chan struct{}, 1),
			space: make(chan struct{}),
			quit:  make(chan struct{}),
			gauge: r.m.unacked.WithLabelValues(peer),
		}
		r.links[peer] = l
		r.wg.Add(1)
		go l.run()
	}
	return l, nil
}

func (r *Replicator) setNoBackup(v bool) {
	r.mu.Lock()
	changed := r.noBackup != v
	r.noBackup = v
	if changed {
		if v {
			r.degradedN++
		} else {
			r.degradedN--
		}
		r.m.degradedPeers.Set(b2f(r.degradedN > 0))
	}
	r.mu.Unlock()
	if changed && v {
		r.log.Error("alarm: no live backup, acknowledging on local durability only",
			"alarm", "cluster.replication.no-backup", "severity", "error")
	} else if changed {
		r.log.Info("backup available again", "alarm", "cluster.replication.no-backup", "severity", "informational")
	}
}

func (r *Replicator) adjustDegraded(delta int) {
	r.mu.Lock()
	r.degradedN += delta
	r.m.degradedPeers.Set(b2f(r.degradedN > 0))
	r.mu.Unlock()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// --- sender side ---

// frame is one D frame waiting for its acknowledgement.
type frame struct {
	seq     uint64
	body    []byte // encoded records
	records int
	at      time.Time
	done    chan struct{}
	err     error
}

// link is the sending side towards one peer: the unacknowledged frames and
// the goroutine that keeps a stream to the peer and writes them.
type link struct {
	r     *Replicator
	peer  string
	epoch uint64
	kick  chan struct{} // cap 1: frames were queued
	quit  chan struct{}
	gauge interface{ Set(float64) }

	mu        sync.Mutex
	pending   []*frame // unacknowledged, ascending seq
	unsent    int      // pending[unsent:] are not written on the current stream
	nextSeq   uint64
	bytes     int
	records   int
	space     chan struct{} // closed when bytes drop
	stopped   bool
	stopErr   error
	stream    Stream
	connected bool
	// unreachable: the last connection attempt failed (FailFast).
	unreachable bool
	degraded    bool
	sent        uint64 // frames written, resends included
	resent      uint64
	written     uint64 // highest seq ever written
	acked       uint64 // records acknowledged
}

func (l *link) enqueue(ctx context.Context, f *frame, at time.Time) error {
	l.mu.Lock()
	for l.bytes > 0 && l.bytes+len(f.body) > l.r.cfg.MaxPendingBytes && !l.stopped {
		space := l.space
		l.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return fmt.Errorf("%w (%v)", ErrBackpressure, ctx.Err())
		}
		l.mu.Lock()
	}
	if l.stopped {
		err := l.stopErr
		l.mu.Unlock()
		return err
	}
	l.nextSeq++
	f.seq = l.nextSeq
	f.at = at
	l.pending = append(l.pending, f)
	l.bytes += len(f.body)
	l.records += f.records
	l.gauge.Set(float64(l.records))
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return nil
}

// ackThrough completes every frame up to seq.
func (l *link) ackThrough(seq uint64) {
	l.mu.Lock()
	n := 0
	for n < len(l.pending) && l.pending[n].seq <= seq {
		n++
	}
	if n == 0 {
		l.mu.Unlock()
		return
	}
	done := l.pending[:n]
	l.pending = append([]*frame(nil), l.pending[n:]...)
	l.unsent = max(0, l.unsent-n)
	recs := 0
	for _, f := range done {
		l.bytes -= len(f.body)
		recs += f.records
	}
	l.records -= recs
	l.acked += uint64(recs)
	l.gauge.Set(float64(l.records))
	close(l.space)
	l.space = make(chan struct{})
	wasDegraded := l.degraded
	l.degraded = false
	l.mu.Unlock()
	for _, f := range done {
		close(f.done)
	}
	l.r.m.recordsAcked.Add(float64(recs))
	if wasDegraded {
		l.r.adjustDegraded(-1)
		l.r.log.Info("backup acknowledging again", "alarm", "cluster.replication.ack-timeout", "severity", "informational", "peer", l.peer)
	}
}

func (l *link) markDegraded() {
	l.mu.Lock()
	was := l.degraded || l.stopped
	l.degraded = true
	l.mu.Unlock()
	if !was {
		l.r.adjustDegraded(1)
		l.r.log.Error("alarm: backup does not acknowledge, acknowledging on local durability only",
			"alarm", "cluster.replication.ack-timeout", "severity", "error", "peer", l.peer)
	}
}

// stop fails every pending frame with err and ends the link's goroutine.
func (l *link) stop(err error) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	l.stopped = true
	l.stopErr = err
	pending := l.pending
	l.pending, l.unsent = nil, 0
	l.bytes, l.records = 0, 0
	s := l.stream
	wasDegraded := l.degraded
	l.degraded = false
	close(l.space)
	l.mu.Unlock()
	l.gauge.Set(0)
	close(l.quit)
	if s != nil {
		s.Close()
	}
	for _, f := range pending {
		f.err = err
		close(f.done)
	}
	if wasDegraded {
		l.r.adjustDegraded(-1)
	}
}

func (l *link) isStopped() bool {
	select {
	case <-l.quit:
		return true
	default:
		return false
	}
}

// sleep waits d or until the link stops; false if it stopped.
func (l *link) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.quit:
		return false
	}
}

func jitter(d time.Duration) time.Duration {
	var b [2]byte
	_, _ = rand.Read(b[:])
	// 75%..125% of d.
	return d*3/4 + time.Duration(uint64(d/2)*uint64(binary.BigEndian.Uint16(b[:]))/65535)
}

// run keeps a stream to the peer and writes pending frames to it.
func (l *link) run() {
	defer l.r.wg.Done()
	backoff := l.r.cfg.ReconnectMin
	for !l.isStopped() {
		s, err := l.connect()
		if err != nil {
			if l.isStopped() {
				return
			}
			l.mu.Lock()
			l.unreachable = true
			l.mu.Unlock()
			l.r.log.Debug("cluster replication connect failed", "peer", l.peer, "err", err, "retry_in", backoff)
			if !l.sleep(jitter(backoff)) {
				return
			}
			backoff = min(backoff*2, l.r.cfg.ReconnectMax)
			continue
		}
		backoff = l.r.cfg.ReconnectMin
		err = l.pump(s)
		s.Close()
		l.mu.Lock()
		l.stream, l.connected, l.unsent = nil, false, 0
		l.mu.Unlock()
		if l.isStopped() {
			return
		}
		l.r.log.Warn("cluster replication stream lost", "peer", l.peer, "err", err)
	}
}

// connect dials the peer and runs the H/W exchange.
func (l *link) connect() (Stream, error) {
	ctx, cancel := context.WithCancel(l.r.ctx)
	defer cancel()
	go func() {
		select {
		case <-l.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	s, err := l.r.tr.Dial(ctx, l.peer)
	if err != nil {
		return nil, err
	}
	// A peer that accepts but never answers must not hold the link.
	timer := time.AfterFunc(max(l.r.cfg.AckTimeout, 5*time.Second), func() { s.Close() })
	defer timer.Stop()
	b := []byte{msgHello}
	b = binary.AppendUvarint(b, protoVersion)
	b = binary.AppendUvarint(b, l.epoch)
	if err := s.WriteFrame(b); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.Flush(); err != nil {
		s.Close()
		return nil, err
	}
	p, err := s.ReadFrame()
	if err != nil {
		s.Close()
		return nil, err
	}
	d := record.NewDecoder(p)
	kind, ver, applied := d.Byte(), d.Uvarint(), d.Uvarint()
	if d.Err() != nil || kind != msgWelcome {
		s.Close()
		return nil, errors.New("cluster: replication: bad welcome")
	}
	if ver != protoVersion {
		s.Close()
		return nil, fmt.Errorf("cluster: replication: peer speaks version %d, want %d", ver, protoVersion)
	}
	if !timer.Stop() {
		s.Close()
		return nil, errors.New("cluster: replication: welcome timed out")
	}
	l.ackThrough(applied)
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		s.Close()
		return nil, l.stopErr
	}
	l.stream, l.connected, l.unsent, l.unreachable = s, true, 0, false
	l.mu.Unlock()
	return s, nil
}

func (l *link) isUnreachable() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unreachable
}

// pump writes frames as they are queued and reads acknowledgements until
// the stream fails or the link stops.
func (l *link) pump(s Stream) error {
	readErr := make(chan error, 1)
	go func() {
		for {
			p, err := s.ReadFrame()
			if err != nil {
				readErr <- err
				return
			}
			d := record.NewDecoder(p)
			kind, seq := d.Byte(), d.Uvarint()
			if d.Err() != nil || kind != msgAck {
				readErr <- errors.New("cluster: replication: bad acknowledgement")
				return
			}
			l.ackThrough(seq)
		}
	}()
	var hdr []byte
	for {
		l.mu.Lock()
		if l.stopped {
			// stop emptied pending and closes the stream.
			l.mu.Unlock()
			return l.stopErr
		}
		batch := l.pending[l.unsent:]
		resend := 0
		for _, f := range batch {
			if f.seq <= l.written {
				resend++
			}
		}
		if n := len(batch); n > 0 {
			l.written = max(l.written, batch[n-1].seq)
		}
		l.unsent = len(l.pending)
		l.sent += uint64(len(batch))
		l.resent += uint64(resend)
		l.mu.Unlock()
		if resend > 0 {
			l.r.m.resent.Add(float64(resend))
		}
		if len(batch) == 0 {
			if err := s.Flush(); err != nil {
				return err
			}
			select {
			case <-l.kick:
				continue
			case err := <-readErr:
				return err
			case <-l.quit:
				return nil
			}
		}
		for _, f := range batch {
			hdr = append(hdr[:0], msgData)
			hdr = binary.AppendUvarint(hdr, f.seq)
			hdr = append(hdr, f.body...)
			if err := s.WriteFrame(hdr); err != nil {
				return err
			}
		}
	}
}

// --- receiver side ---

// inState is what a receiver remembers of one sender.
type inState struct {
	mu      sync.Mutex // held while a stream from the sender applies
	epoch   uint64
	applied uint64
	cur     Stream // the newest stream from the sender
	// Counters for Status, readable without mu.
	frames, records atomic.Uint64
}

func (r *Replicator) acceptLoop() {
	defer r.wg.Done()
	for {
		s, err := r.tr.Accept()
		if err != nil {
			return
		}
		if r.app == nil {
			s.Close()
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := r.serve(s); err != nil && r.ctx.Err() == nil {
				r.log.Warn("cluster replication inbound stream ended", "peer", s.Peer(), "err", err)
			}
		}()
	}
}

func (r *Replicator) serve(s Stream) error {
	defer s.Close()
	stop := context.AfterFunc(r.ctx, func() { s.Close() })
	defer stop()
	from := s.Peer()
	p, err := s.ReadFrame()
	if err != nil {
		return err
	}
	d := record.NewDecoder(p)
	kind, ver, epoch := d.Byte(), d.Uvarint(), d.Uvarint()
	if d.Err() != nil || kind != msgHello {
		return errors.New("cluster: replication: bad hello")
	}
	r.mu.Lock()
	st := r.inbound[from]
	if st == nil {
		st = &inState{}
		r.inbound[from] = st
	}
	old := st.cur
	st.cur = s
	r.mu.Unlock()
	if old != nil {
		old.Close() // the sender has moved to this stream
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.epoch != epoch {
		st.epoch, st.applied = epoch, 0
	}
	w := []byte{msgWelcome}
	w = binary.AppendUvarint(w, protoVersion)
	w = binary.AppendUvarint(w, st.applied)
	if err := s.WriteFrame(w); err != nil {
		return err
	}
	if err := s.Flush(); err != nil {
		return err
	}
	if ver != protoVersion {
		return fmt.Errorf("cluster: replication: sender speaks version %d, want %d", ver, protoVersion)
	}

	// The acker writes the newest applied seq; under load one A frame
	// covers many D frames.
	var ackMu sync.Mutex
	var ackSeq uint64
	ackKick := make(chan struct{}, 1)
	ackDone := make(chan struct{})
	defer func() { <-ackDone }()
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		defer close(ackDone)
		var buf []byte
		var last uint64
		for {
			select {
			case <-ackKick:
			case <-quit:
				return
			}
			ackMu.Lock()
			seq := ackSeq
			ackMu.Unlock()
			if seq == last {
				continue
			}
			buf = append(buf[:0], msgAck)
			buf = binary.AppendUvarint(buf, seq)
			if s.WriteFrame(buf) != nil || s.Flush() != nil {
				s.Close()
				return
			}
			last = seq
		}
	}()
	ack := func(seq uint64) {
		ackMu.Lock()
		ackSeq = seq
		ackMu.Unlock()
		select {
		case ackKick <- struct{}{}:
		default:
		}
	}

	// Frames whose records are not yet durable are acknowledged in order by
	// durableAcks once their waits return.
	type pendingAck struct {
		seq   uint64
		waits []func() error
	}
	durableAcks := make(chan pendingAck, 1024)
	durableDone := make(chan struct{})
	defer func() { close(durableAcks); <-durableDone }()
	go func() {
		defer close(durableDone)
		for p := range durableAcks {
			for _, w := range p.waits {
				if err := w(); err != nil {
					r.m.applyErrors.Inc()
					r.log.Error("cluster: replicated record not durable", "peer", from, "err", err)
				}
			}
			ack(p.seq)
		}
	}()

	for {
		p, err := s.ReadFrame()
		if err != nil {
			return err
		}
		d := record.NewDecoder(p)
		if d.Byte() != msgData {
			return errors.New("cluster: replication: unexpected frame")
		}
		seq := d.Uvarint()
		if d.Err() != nil {
			return errors.New("cluster: replication: bad data frame")
		}
		if seq <= st.applied {
			ack(st.applied) // a resend of what we hold
			continue
		}
		// Records keep their byte slices: copy off the stream's buffer.
		body := append([]byte(nil), d.Rest()...)
		n := 0
		var waits []func() error
		for len(body) > 0 {
			rec, rest, err := record.Decode(body)
			if err != nil {
				return err
			}
			w, err := r.app.Apply(from, rec)
			if err != nil {
				r.m.applyErrors.Inc()
				return fmt.Errorf("cluster: replication: apply kind %d from %s: %w", rec.Kind, from, err)
			}
			if w != nil {
				waits = append(waits, w)
			}
			body = rest
			n++
		}
		st.applied = seq
		st.frames.Add(1)
		st.records.Add(uint64(n))
		r.m.recordsIn.Add(float64(n))
		durableAcks <- pendingAck{seq: seq, waits: waits}
	}
}
