// Package router is pushd's XMPP edge: it accepts client (c2s) and
// component (XEP-0114) connections, negotiates streams (STARTTLS, SASL,
// resource binding, XEP-0198 stream management, XEP-0352 client state),
// turns what arrives into jsm events and carries out the actions jsm
// returns.
//
// The router owns sockets, timers and storage calls; it must never decide
// where a stanza goes — that is jsm's job, so that delivery policy stays in
// one replayable state machine.
//
// Streams are read and written by pushd's own framing (internal/stanza)
// rather than mellium's Session: the edge needs byte-exact limits,
// resumption that moves a stream to a new connection, and XEP-0198 counters,
// none of which mellium's server side offers. SASL mechanics and JIDs come
// from mellium.
package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/redact"
	"pushd/internal/stanza"
	"pushd/jsm"
)

// Queue stores what jsm queues for suspended devices and the offline
// messages of users with no available device. Writes do not wait: they
// are committed in the order submitted (the router submits under its
// lock) and each returns a function that waits until it is durable, which
// the router calls outside its lock before acknowledging the sender.
// Reads see every write submitted before them.
type Queue interface {
	AppendAsync(device string, entries []jsm.Entry) (wait func() error)
	RemoveAsync(device string, seqs []uint64) (wait func() error)
	TrimAsync(device string, through uint64) (wait func() error)
	DropAsync(device string) (wait func() error)
	// StoreOfflineAsync returns the message's sequence number in the
	// user's offline store.
	StoreOfflineAsync(user string, msg *stanza.Element) (seq uint64, wait func() error)
	Read(device string, from uint64, fn func(jsm.Entry) error) error
	// TakeOffline also returns the sequence number of the last message.
	TakeOffline(user string) (msgs []*stanza.Element, through uint64, err error)
	ReadOffline(user string) ([]jsm.Entry, error)
}

// Rosters persists roster changes jsm decides.
type Rosters interface {
	Save(user jid.JID, item jsm.RosterItem) error
	Delete(user, contact jid.JID) error
}

// PushRegistrations persists the devices' XEP-0357 registrations.
type PushRegistrations interface {
	Save(device string, reg jsm.Registration) error
	Delete(device string, appServer jid.JID, node string) error
}

// Stores are the router's persistent state.
type Stores struct {
	Accounts          Accounts
	Queue             Queue
	Rosters           Rosters
	PushRegistrations PushRegistrations
}

// Server is one node's XMPP edge around one jsm.Machine.
type Server struct {
	cfg      Config
	log      *slog.Logger
	accounts Accounts
	queue    Queue
	rosters  Rosters
	pushRegs PushRegistrations
	domain   jid.JID

	// mu serialises the session manager and the routing tables. Actions are
	// carried out while it is held so that deliveries to one stream keep
	// the order jsm chose.
	mu         sync.Mutex
	machine    *jsm.Machine
	streams    map[jsm.StreamID]*stream
	resumable  map[string]*stream
	components map[string]*componentLink

	// durable collects, during one Step, the waits of the writes a
	// sender's acknowledgement depends on (DESIGN rule 2).
	durable []func() error
	// replicated collects the waits of the same writes on the backup node.
	replicated []func() error
	// reap receives waits nobody acknowledges on, to log their failures.
	reap chan func() error

	nextID atomic.Uint64
	// forwardPrefix and forwardSeq make the ids of stanzas forwarded to
	// other nodes; forwards holds the ids recently routed here.
	forwardPrefix string
	forwardSeq    atomic.Uint64
	forwards      seenSet
	// lanes keep forwarded stanzas in order per user (forward.go);
	// pastLanes: the stanza being routed came through a lane, another
	// node's or this one's: it joins no lane here, and what it causes on
	// other nodes is awaited in the background (s.mu).
	lanes     lanes
	pastLanes bool
	// wakeAt is when the tick loop steps jsm next (s.mu); rearm wakes
	// it to look again.
	wakeAt  time.Time
	rearm   chan struct{}
	conns   sync.WaitGroup
	closing chan struct{}
	lnMu    sync.Mutex
	lns     []net.Listener
	live    map[net.Conn]struct{}
}

// New returns a Server around machine. It serves nothing until Serve.
func New(cfg Config, machine *jsm.Machine, stores Stores) (*Server, error) {
	def := DefaultConfig()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Redact == nil {
		cfg.Redact = redact.New()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Limits.MaxBytes == 0 {
		cfg.Limits = def.Limits
	}
	if cfg.MaxAuthAttempts == 0 {
		cfg.MaxAuthAttempts = def.MaxAuthAttempts
	}
	if cfg.NegotiationTimeout == 0 {
		cfg.NegotiationTimeout = def.NegotiationTimeout
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = def.WriteTimeout
	}
	if cfg.TickInterval == 0 {
		cfg.TickInterval = def.TickInterval
	}
	if cfg.ResumeTimeout == 0 {
		cfg.ResumeTimeout = def.ResumeTimeout
	}
	if cfg.PushResumeTimeout == 0 {
		cfg.PushResumeTimeout = def.PushResumeTimeout
	}
	if cfg.AckRequestEvery == 0 {
		cfg.AckRequestEvery = def.AckRequestEvery
	}
	domain, err := jid.Parse(cfg.Domain)
	if err != nil || domain.Localpart() != "" || domain.Resourcepart() != "" {
		return nil, fmt.Errorf("router: domain %q is not a domain JID", cfg.Domain)
	}
	s := &Server{
		reap:          make(chan func() error, 4096),
		forwardPrefix: randomID(6) + "-",
		cfg:           cfg,
		log:           cfg.Logger,
		accounts:      stores.Accounts,
		queue:         stores.Queue,
		rosters:       stores.Rosters,
		pushRegs:      stores.PushRegistrations,
		domain:        domain,
		machine:       machine,
		streams:       make(map[jsm.StreamID]*stream),
		resumable:     make(map[string]*stream),
		components:    make(map[string]*componentLink),
		closing:       make(chan struct{}),
		rearm:         make(chan struct{}, 1),
		live:          make(map[net.Conn]struct{}),
	}
	go s.reaper()
	return s, nil
}

// reaper waits for writes nobody acknowledges on and logs their failures.
// They complete in submission order, so one goroutine suffices.
func (s *Server) reaper() {
	for {
		select {
		case w := <-s.reap:
			s.reapOne(w)
		case <-s.closing:
			for {
				select {
				case w := <-s.reap:
					s.reapOne(w)
				default:
					return
				}
			}
		}
	}
}

func (s *Server) reapOne(w func() error) {
	if err := w(); err != nil {
		s.log.Error("storage write failed", "err", err)
	}
}

func (s *Server) background(w func() error) {
	select {
	case <-s.closing:
		// Shutting down: the reaper may be gone.
		s.reapOne(w)
		return
	default:
	}
	select {
	case s.reap <- w:
	default:
		// The reaper is behind: wait here rather than grow without bound.
		s.reapOne(w)
	}
}

// Listen opens the configured listeners; the addresses actually bound are
// returned by Addrs (a port of 0 picks a free one).
func (s *Server) Listen() error {
	type spec struct {
		addr string
		kind listenerKind
	}
	specs := []spec{{s.cfg.C2SListen, c2sListener}, {s.cfg.ComponentListen, componentListener}}
	if s.cfg.TLS != nil {
		specs = append(specs, spec{s.cfg.TLSListen, directTLSListener})
	}
	for _, sp := range specs {
		if sp.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", sp.addr)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("router: listen %s: %w", sp.addr, err)
		}
		s.lns = append(s.lns, &kindListener{Listener: ln, kind: sp.kind})
	}
	return nil
}

type listenerKind int

const (
	c2sListener listenerKind = iota
	directTLSListener
	componentListener
)

func (k listenerKind) String() string {
	switch k {
	case directTLSListener:
		return "tls"
	case componentListener:
		return "component"
	}
	return "c2s"
}

type kindListener struct {
	net.Listener
	kind listenerKind
}

// Addr returns the bound address of the c2s ("c2s"), direct TLS ("tls")
// or component ("component") listener, or "".
func (s *Server) Addr(name string) string {
	want := map[string]listenerKind{"c2s": c2sListener, "tls": directTLSListener, "component": componentListener}[name]
	for _, ln := range s.lns {
		if kl := ln.(*kindListener); kl.kind == want {
			return kl.Addr().String()
		}
	}
	return ""
}

// Serve accepts connections on the listeners opened by Listen and runs the
// session manager's timers until ctx ends; then it closes every stream with
// system-shutdown and returns when all connections are gone.
func (s *Server) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, ln := range s.lns {
		wg.Add(1)
		go func(kl *kindListener) {
			defer wg.Done()
			s.accept(kl)
		}(ln.(*kindListener))
	}
	timer := time.NewTimer(s.nextWake())
	defer timer.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-s.rearm:
		case <-timer.C:
			s.Step(jsm.Tick{})
		}
		timer.Reset(s.nextWake())
	}
	close(s.closing)
	s.closeListeners()
	wg.Wait()
	s.lnMu.Lock()
	for c := range s.live {
		_ = c.SetDeadline(time.Now())
	}
	s.lnMu.Unlock()
	s.conns.Wait()
	return nil
}

func (s *Server) closeListeners() {
	for _, ln := range s.lns {
		_ = ln.Close()
	}
}

func (s *Server) accept(ln *kindListener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			select {
			case <-s.closing:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		s.conns.Add(1)
		gauge := s.cfg.Metrics.connections.WithLabelValues(ln.kind.String())
		gauge.Inc()
		s.lnMu.Lock()
		s.live[conn] = struct{}{}
		s.lnMu.Unlock()
		go func() {
			defer s.conns.Done()
			defer func() {
				s.lnMu.Lock()
				delete(s.live, conn)
				s.lnMu.Unlock()
				gauge.Dec()
				_ = conn.Close()
			}()
			switch ln.kind {
			case componentListener:
				s.serveComponent(conn)
			case directTLSListener:
				s.serveC2S(conn, true)
			default:
				s.serveC2S(conn, false)
			}
		}()
	}
}

// Step feeds one event to the session manager and carries out its
// actions. Writes it caused become durable in the background.
func (s *Server) Step(ev jsm.Event) {
	for _, w := range s.step(ev) {
		s.background(w)
	}
}

// step feeds one event and returns the waits of the writes that must be
// durable before the stanza behind ev is acknowledged.
func (s *Server) step(ev jsm.Event) []func() error {
	local, replicated := s.stepWaits(ev)
	return append(local, replicated...)
}

// stepWaits is step with the waits for local durability apart from those
// for the backup's.
func (s *Server) stepWaits(ev jsm.Event) (local, replicated []func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stepCollect(ev)
}

// stepLocked feeds ev with s.mu held; the writes it causes become
// durable in the background. They used to wait on s.durable for the next
// step that collected waits, and so delayed an unrelated stanza's
// acknowledgement, or made it wait on a forward back to its own node.
func (s *Server) stepLocked(ev jsm.Event) {
	local, replicated := s.stepCollect(ev)
	for _, w := range append(local, replicated...) {
		select {
		case s.reap <- w:
		default:
			// The reaper is behind; a write awaited here, under the lock,
			// could wait on a lane that needs it.
			go s.reapOne(w)
		}
	}
}

// stepCollect feeds ev with s.mu held and returns the waits of the writes
// it caused.
func (s *Server) stepCollect(ev jsm.Event) (local, replicated []func() error) {
	for _, a := range s.machine.Step(s.cfg.Now(), ev) {
		s.execute(a)
	}
	// A timer the step armed (a coalescing window's end, an adopted
	// device's first push, an expiry) sooner than the next tick wakes the
	// loop for it: a 1 s tick made such pushes up to 1 s late.
	if at, ok := s.machine.NextDeadline(); ok && at.Before(s.wakeAt) {
		s.wakeAt = at
		select {
		case s.rearm <- struct{}{}:
		default:
		}
	}
	local, replicated = s.durable, s.replicated
	s.durable, s.replicated = nil, nil
	return local, replicated
}

// nextWake is when the tick loop steps jsm next: its next deadline, at
// the latest a TickInterval from now.
func (s *Server) nextWake() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	s.wakeAt = now.Add(s.cfg.TickInterval)
	if at, ok := s.machine.NextDeadline(); ok && at.Before(s.wakeAt) {
		s.wakeAt = at
	}
	return max(s.wakeAt.Sub(now), 0)
}

// execute carries out one jsm action; s.mu is held.
func (s *Server) execute(a jsm.Action) {
	switch a := a.(type) {
	case jsm.Deliver:
		if st := s.streams[a.Stream]; st != nil {
			st.deliver(a.Entry)
		}
	case jsm.ToComponent:
		if link := s.components[a.Domain]; link != nil {
			link.send(a.Stanza)
		}
	case jsm.Forward:
		// What the session manager sends a user of another node
		// (presence to contacts, probes and their answers, bounces). A
		// copy: forward marks it with its forwarding id.
		if c := s.cfg.Cluster; c != nil {
			to, err := jid.Parse(a.Stanza.Get("to"))
			if err == nil {
				user := to.Bare().String()
				w := s.forward(user, c.Serving(user), a.Stanza.Copy())
				if s.pastLanes {
					// What a stanza from another node causes for a third
					// user (a subscription answer, a bounce, presence) is
					// not what its sender waits for: its node acknowledges
					// frames in order, and waiting here on a forward back
					// to it would wait on ourselves.
					s.background(w)
				} else {
					s.replicated = append(s.replicated, w)
				}
			}
		}
	case jsm.Enqueue:
		s.durable = append(s.durable, s.queue.AppendAsync(a.Device, a.Entries))
		if c := s.cfg.Cluster; c != nil {
			s.replicated = append(s.replicated, c.Enqueue(a.Device, a.Entries))
		}
	case jsm.Flush:
		st := s.streams[a.Stream]
		if st == nil {
			return
		}
		var last uint64
		err := s.queue.Read(a.Device, a.From, func(e jsm.Entry) error {
			st.deliver(e)
			last = e.Seq
			return nil
		})
		if err != nil {
			s.log.Error("queue read failed", "err", err)
		}
		if through := st.markFlushed(last); through > 0 {
			s.stepLocked(jsm.Acked{Stream: a.Stream, Seq: through})
		}
	case jsm.Trim:
		s.background(s.queue.TrimAsync(a.Device, a.Through))
		if c := s.cfg.Cluster; c != nil {
			s.background(c.Trim(a.Device, a.Through))
		}
	case jsm.DropQueue:
		s.background(s.queue.DropAsync(a.Device))
		if c := s.cfg.Cluster; c != nil {
			s.background(c.Drop(a.Device))
		}
	case jsm.LoadQueue:
		var entries []jsm.Entry
		err := s.queue.Read(a.Device, 0, func(e jsm.Entry) error {
			entries = append(entries, e)
			return nil
		})
		if err != nil {
			s.log.Error("queue read failed", "err", err)
		}
		s.stepLocked(jsm.QueueLoaded{Device: a.Device, Entries: entries})
	case jsm.StoreOffline:
		user := a.User.String()
		seq, w := s.queue.StoreOfflineAsync(user, a.Message)
		s.durable = append(s.durable, w)
		if c := s.cfg.Cluster; c != nil {
			s.durable = append(s.durable, c.StoreOffline(user, jsm.Entry{Seq: seq, Stanza: a.Message}))
		}
	case jsm.FlushOffline:
		user := a.User.String()
		msgs, through, err := s.queue.TakeOffline(user)
		if err != nil {
			s.log.Error("offline load failed", "err", err)
			return
		}
		if len(msgs) > 0 {
			s.stepLocked(jsm.OfflineLoaded{Stream: a.Stream, Messages: msgs})
		}
		// After what delivering them queued for the device, so that the
		// backup never holds them in neither place.
		if c := s.cfg.Cluster; c != nil && through > 0 {
			s.background(c.TakeOffline(user, through))
		}
	case jsm.SaveRosterItem:
		if err := s.rosters.Save(a.User, a.Item); err != nil {
			s.log.Error("roster save failed", "err", err)
		}
	case jsm.DeleteRosterItem:
		if err := s.rosters.Delete(a.User, a.Contact); err != nil {
			s.log.Error("roster delete failed", "err", err)
		}
	case jsm.Remove:
		s.background(s.queue.RemoveAsync(a.Device, a.Seqs))
		if c := s.cfg.Cluster; c != nil {
			s.background(c.Remove(a.Device, a.Seqs))
		}
	case jsm.SaveRegistration:
		// Registrations change rarely (enable/disable) and their order
		// matters, so they are written here, in order.
		if err := s.pushRegs.Save(a.Device, a.Registration); err != nil {
			s.log.Error("push registration not saved", "err", err)
		}
		s.registrationsChanged(a.Device)
	case jsm.DeleteRegistration:
		if err := s.pushRegs.Delete(a.Device, a.AppServer, a.Node); err != nil {
			s.log.Error("push registration not deleted", "err", err)
		}
		s.registrationsChanged(a.Device)
	case jsm.Publish:
		s.publish(a)
	case jsm.Pushed:
		if st := s.streams[a.Stream]; st != nil && st.from == a.Device {
			st.mu.Lock()
			st.pushed = a.Through
			st.mu.Unlock()
			s.replicate(st)
		}
	case jsm.PushDisabled:
		s.cfg.Metrics.pushDisabled.WithLabelValues(a.Reason).Inc()
		s.log.Warn("push disabled: the app server refused a notification", "device", s.cfg.Redact.Token(a.Device), "condition", a.Reason)
	case jsm.CloseStream:
		st := s.streams[a.Stream]
		if st == nil {
			return
		}
		s.forget(st)
		s.replicateEnd(st)
		if a.Condition == "" {
			st.close(nil)
		} else {
			st.close(&StreamError{Condition: a.Condition})
		}
	default:
		s.log.Error("unknown jsm action", "type", fmt.Sprintf("%T", a))
	}
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Devices reports the session manager's view of a user's devices, for
// operators and tests.
func (s *Server) Devices(user jid.JID) []jsm.DeviceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.machine.Devices(user)
}

// Redact returns the log token of a personal value (BEHAVIOUR S3).
func (s *Server) Redact(v string) string { return s.cfg.Redact.Token(v) }
