// Package sip is pushd's SIP side (BEHAVIOUR C1–C8): the RFC 8599
// registrar of its users' phones and the holding proxy that wakes a
// sleeping phone with a VoIP push when a call comes, holds the INVITE
// until the phone registers again, and ends the call the way the phone's
// CallKit screen needs.
//
// The decisions of a call (fork, push, 180 at 5 s, 480 at 13 s, CANCEL,
// shared line, late REGISTER) are component/sip/call's state machine; this
// package is the runner around it: sockets and transactions
// (github.com/emiago/sipgo), the registrar, digest authentication, and
// pushes through the one dispatcher. Only the runner's loop goroutine
// steps the machine.
//
// It must never log a user, number or display name in clear (through
// internal/redact only), never push a caller's identity outside the
// device-key ciphertext (S2), and never let one source's garbage or flood
// harm another call (S4).
package sip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"pushd/component/dispatch"
	"pushd/component/sip/call"
	"pushd/internal/redact"
)

// Pusher is the dispatcher as the SIP side uses it.
type Pusher interface {
	Submit(ctx context.Context, job dispatch.Job) (string, error)
}

// Devices finds the push registration the same app made over XMPP with
// the same provider token (DESIGN: one device on every channel): it holds
// the device's key, message token and region. ok false: none.
type Devices interface {
	RegistrationByToken(provider dispatch.ProviderName, token string) (dispatch.Registration, bool)
}

// Deps are the server's collaborators.
type Deps struct {
	Registrar *Registrar
	// Accounts verifies digest credentials (required).
	Accounts Accounts
	// Pusher is nil when no push provider is configured: calls then only
	// fork to live bindings.
	Pusher Pusher
	// Devices may be nil (no XMPP side).
	Devices Devices
	// InCall hears when a user's phone has a call up through pushd, and
	// when it no longer has (M7). May be nil.
	InCall func(aor, device string, up bool)
	// Metrics may be nil.
	Metrics *Metrics
}

// Server is a running SIP registrar and proxy.
type Server struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	red    *redact.Redactor
	reg    *Registrar
	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	client *sipgo.Client
	auth   *authenticator
	limit  *sourceLimiter

	udp net.PacketConn
	tcp net.Listener
	tls net.Listener

	// The loop owns the machine; everything else talks to it through
	// events.
	machine *call.Machine
	events  chan call.Event
	wake    chan struct{}
	// refresh is the registrar's NextRefresh as of generation refreshGen,
	// valid while refreshOK: the loop's alone. It is read again when a
	// binding changes, a refresh timer fires, and at each sweep (what
	// Placement says may have changed).
	refresh    time.Time
	refreshGen uint64
	refreshOK  bool

	mu    sync.Mutex
	calls map[call.ID]*callCtx
	// late are INVITEs sent to phones for calls that already ended (C8),
	// kept until their CANCEL went.
	closing   bool
	closeOnce sync.Once

	wg sync.WaitGroup
}

// udpReadBuffer is the UDP socket's receive buffer.
const udpReadBuffer = 4 << 20

// New builds a server; Listen binds its sockets, Serve runs it.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg.fill()
	if deps.Registrar == nil || deps.Accounts == nil {
		return nil, errors.New("sip: registrar and accounts are required")
	}
	if cfg.Domain == "" {
		return nil, errors.New("sip: no domain")
	}
	host, _, err := net.SplitHostPort(cfg.Advertise)
	if err != nil {
		return nil, fmt.Errorf("sip: advertise %q: %w", cfg.Advertise, err)
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("pushd"), sipgo.WithUserAgentHostname(host),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet(cfg.Logger))),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet(cfg.Logger))))
	if err != nil {
		return nil, fmt.Errorf("sip: %w", err)
	}
	s := &Server{
		cfg: cfg, deps: deps, log: cfg.Logger, red: redact.New(), reg: deps.Registrar, ua: ua,
		machine: call.New(call.Config{RingAfter: cfg.RingAfter, GiveUpAfter: cfg.GiveUpAfter}),
		events:  make(chan call.Event, 1024), wake: make(chan struct{}, 1),
		calls: map[call.ID]*callCtx{},
		limit: newSourceLimiter(cfg.RequestRate, cfg.RequestBurst),
	}
	if s.auth, err = newAuthenticator(cfg, deps.Accounts); err != nil {
		return nil, err
	}
	s.srv, err = sipgo.NewServer(ua, sipgo.WithServerLogger(quiet(cfg.Logger)))
	if err != nil {
		return nil, fmt.Errorf("sip: %w", err)
	}
	s.srv.OnRegister(s.guard(s.onRegister))
	s.srv.OnInvite(s.guard(s.onInvite))
	s.srv.OnAck(s.guard(s.onAck))
	s.srv.OnCancel(s.guard(s.onCancel))
	s.srv.OnBye(s.guard(s.inDialog))
	s.srv.OnOptions(s.guard(s.onOptions))
	for _, m := range []sip.RequestMethod{sip.UPDATE, sip.INFO, sip.PRACK, sip.REFER, sip.NOTIFY, sip.MESSAGE} {
		s.srv.OnRequest(m, s.guard(s.inDialog))
	}
	return s, nil
}

// Listen binds the UDP, TCP and (when configured) TLS listeners.
func (s *Server) Listen() error {
	var err error
	if s.udp, err = net.ListenPacket("udp", s.cfg.Listen); err != nil {
		return fmt.Errorf("sip: listen udp: %w", err)
	}
	if u, ok := s.udp.(*net.UDPConn); ok {
		// The default (~200 KiB) overflows when a burst of requests meets
		// a busy loop, and UDP drops what does not fit: the caller waits
		// for a retransmission (500 ms). The kernel caps it at rmem_max.
		_ = u.SetReadBuffer(udpReadBuffer)
	}
	// TCP on the port UDP got, so that ":0" in tests gives one address.
	if s.tcp, err = net.Listen("tcp", s.udp.LocalAddr().String()); err != nil {
		_ = s.udp.Close()
		return fmt.Errorf("sip: listen tcp: %w", err)
	}
	if s.cfg.TLSListen != "" && s.cfg.TLS != nil {
		if s.tls, err = tlsListen(s.cfg.TLSListen, s.cfg.TLS); err != nil {
			_ = s.udp.Close()
			_ = s.tcp.Close()
			return fmt.Errorf("sip: listen tls: %w", err)
		}
	}
	addr := s.udp.LocalAddr().(*net.UDPAddr)
	if s.cfg.Advertise == s.cfg.Listen {
		s.cfg.Advertise = addr.String()
	}
	host, _, _ := net.SplitHostPort(s.cfg.Advertise)
	s.client, err = sipgo.NewClient(s.ua, sipgo.WithClientHostname(host), sipgo.WithClientAddr(addr.String()),
		sipgo.WithClientLogger(quiet(s.log)))
	if err != nil {
		return fmt.Errorf("sip: client: %w", err)
	}
	return nil
}

// ApplyBinding takes a binding another node of the cluster stored (a
// KindBinding record): a phone that registered there is reachable from
// here, and a call this node holds for it goes to it at once (C3).
func (s *Server) ApplyBinding(b Binding, removed bool) error {
	stored, err := s.reg.Import(b, removed)
	if err != nil || !stored {
		return err
	}
	if s.cfg.Now().Before(b.Expires) {
		s.step(call.Registered{AOR: b.AOR, Binding: s.machineBinding(b)})
	}
	return nil
}

// Addr is where the server listens ("udp", "tcp", "tls"); "" if not.
func (s *Server) Addr(network string) string {
	switch {
	case network == "udp" && s.udp != nil:
		return s.udp.LocalAddr().String()
	case network == "tcp" && s.tcp != nil:
		return s.tcp.Addr().String()
	case network == "tls" && s.tls != nil:
		return s.tls.Addr().String()
	}
	return ""
}

// Advertised is the address call payloads name.
func (s *Server) Advertised() string { return s.cfg.Advertise }

// Serve runs until ctx ends: the sockets, and the loop that steps the
// call machine.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 3)
	go func() { errc <- s.srv.ServeUDP(s.udp) }()
	go func() { errc <- s.srv.ServeTCP(s.tcp) }()
	n := 2
	if s.tls != nil {
		n++
		go func() { errc <- s.srv.ServeTLS(s.tls) }()
	}
	loopDone := make(chan struct{})
	go func() { s.loop(ctx); close(loopDone) }()
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
		n--
	}
	// Reading stops first, and sipgo closes its transactions and
	// connections only once nothing reads: a message read just before
	// still makes its transaction (and for a response, maybe a fresh
	// connection) in a goroutine of sipgo's, which the pool must hold by
	// the time it is cleared.
	s.stopListening()
	for range n {
		<-errc
	}
	s.Close()
	<-loopDone
	s.wg.Wait()
	// What the handlers that ran until now opened (a response's
	// connection, a late branch's) goes too.
	_ = s.ua.Close()
	if first != nil && !errors.Is(first, net.ErrClosed) && ctx.Err() == nil {
		return fmt.Errorf("sip: %w", first)
	}
	return nil
}

// Close closes the sockets (Serve does it when it ends; a server that
// never served needs it). Safe to call twice.
func (s *Server) Close() {
	s.stopListening()
	s.closeOnce.Do(func() { _ = s.ua.Close() })
}

// stopListening refuses new calls and closes the sockets. Safe to call
// twice.
func (s *Server) stopListening() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return
	}
	s.closing = true
	if s.udp != nil {
		_ = s.udp.Close()
	}
	if s.tcp != nil {
		_ = s.tcp.Close()
	}
	if s.tls != nil {
		_ = s.tls.Close()
	}
}

// step hands an event to the loop. It never blocks for long: the loop
// only steps the machine and starts I/O.
func (s *Server) step(ev call.Event) {
	s.events <- ev
}

// loop is the only goroutine that steps the machine: events in the order
// they came, and the clock at the machine's next deadline, and the
// registrar's refresh pushes.
func (s *Server) loop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	for {
		s.rearm(timer)
		select {
		case <-ctx.Done():
			return
		case ev := <-s.events:
			s.admit(ev)
			s.carry(s.machine.Step(s.cfg.Now(), ev))
		case <-timer.C:
			now := s.cfg.Now()
			s.carry(s.machine.Step(now, call.Tick{}))
			// Most fires are the calls' deadlines: the bindings are
			// looked at only when a refresh push is due.
			if r := s.refresh; !r.IsZero() && !now.Before(r) {
				s.refreshOK = false
				s.refreshPushes()
			}
		case <-sweep.C:
			s.refreshOK = false
			if err := s.reg.Sweep(s.cfg.Now()); err != nil {
				s.log.Error("sip: sweep bindings", "err", err)
			}
			s.refreshPushes()
		case <-s.wake:
		}
	}
}

// rearm points the timer at the earliest of the machine's deadline and
// the next refresh push.
func (s *Server) rearm(t *time.Timer) {
	next := s.machine.Next()
	if gen := s.reg.Generation(); !s.refreshOK || gen != s.refreshGen {
		s.refresh, s.refreshGen, s.refreshOK = s.reg.NextRefresh(s.cfg.RefreshPushBefore, s.serves), gen, true
	}
	if r := s.refresh; !r.IsZero() && (next.IsZero() || r.Before(next)) {
		next = r
	}
	d := time.Hour
	if !next.IsZero() {
		d = max(next.Sub(s.cfg.Now()), time.Millisecond)
	}
	t.Reset(d)
}

// Tick steps the machine now: tests on a fake clock call it after moving
// the clock.
func (s *Server) Tick() {
	s.step(call.Tick{})
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// carry carries out a step's actions in order. Anything that may wait
// on the network or the disk runs outside the loop.
func (s *Server) carry(actions []call.Action) {
	for _, a := range actions {
		switch a := a.(type) {
		case call.Fork:
			if c := s.call(a.Call); c != nil {
				s.fork(c, a.Binding, call.ReasonNone, false)
			}
		case call.LateInvite:
			if c := s.call(a.Call); c != nil {
				s.fork(c, a.Binding, a.Reason, true)
			}
		case call.CancelBranch:
			if c := s.call(a.Call); c != nil {
				c.cancelBranch(s, a.Binding, a.Reason)
			}
		case call.Push:
			if c := s.call(a.Call); c != nil {
				s.pushCall(c, a.Binding, a.Type)
			}
		case call.Respond:
			if c := s.call(a.Call); c != nil {
				c.respond(s, a.Code, a.Binding)
			}
		case call.InCall:
			if s.deps.InCall != nil {
				s.deps.InCall(a.AOR, a.Device, a.Up)
			}
		}
	}
	s.forgetEnded()
}

func (s *Server) call(id call.ID) *callCtx {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[id]
}

// admit marks a call's context as the machine's once its Invite is
// stepped: a context whose Invite is still on its way is not the one a
// forgotten call of the same Call-ID left.
func (s *Server) admit(ev call.Event) {
	inv, ok := ev.(call.Invite)
	if !ok {
		return
	}
	s.mu.Lock()
	if c := s.calls[inv.Call]; c != nil {
		c.admitted = true
	}
	s.mu.Unlock()
}

// forgetEnded drops the contexts of the calls the machine forgot.
func (s *Server) forgetEnded() {
	gone := s.machine.Forgotten()
	if len(gone) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range gone {
		if c := s.calls[id]; c != nil && c.admitted {
			c.release()
			delete(s.calls, id)
		}
	}
}

// guard applies the per-source request limit, the size bound and the
// checks of what every handler takes for granted before it (S4). An ACK
// gets no answer, whatever is wrong with it.
func (s *Server) guard(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		host, _, _ := net.SplitHostPort(req.Source())
		if !s.limit.allow(host, s.cfg.Now()) {
			s.count("rate_limited")
			if !req.IsAck() {
				res := sip.NewResponseFromRequest(req, 503, "Service Unavailable", nil)
				res.AppendHeader(sip.NewHeader("Retry-After", "5"))
				_ = tx.Respond(res)
			}
			return
		}
		if messageSize(req) > s.cfg.MaxMessageBytes {
			s.count("too_large")
			if !req.IsAck() {
				_ = tx.Respond(sip.NewResponseFromRequest(req, 513, "Message Too Large", nil))
			}
			return
		}
		if why := malformed(req); why != "" {
			s.count("malformed")
			if !req.IsAck() {
				_ = tx.Respond(sip.NewResponseFromRequest(req, 400, why, nil))
			}
			return
		}
		h(req, tx)
	}
}

// maxHeaders bounds the header fields of a request: a few dozen in
// practice, a Via and a Record-Route more per hop (70 at most).
const maxHeaders = 256

// malformed says why a request lacks what every handler may take for
// granted (RFC 3261 §8.1.1: To, From, CSeq, Call-ID, Max-Forwards, Via;
// §8.1.1.5: CSeq's method is the request's), as a 400's reason phrase;
// "" if nothing. sipgo's transaction layer refuses a request without Via
// or CSeq itself, but passes on one without To, From or Call-ID.
func malformed(req *sip.Request) string {
	switch {
	case req.Via() == nil:
		return "Missing Via"
	case req.From() == nil:
		return "Missing From"
	case req.To() == nil:
		return "Missing To"
	case req.CallID() == nil || req.CallID().Value() == "":
		return "Missing Call-ID"
	case req.CSeq() == nil:
		return "Missing CSeq"
	case req.CSeq().MethodName != req.Method:
		return "CSeq Method Mismatch"
	case len(req.Headers()) > maxHeaders:
		return "Too Many Headers"
	}
	return ""
}

// messageSize is the length of m on the wire, counted without building
// it.
func messageSize(m interface{ StringWrite(io.StringWriter) }) int {
	var n byteCounter
	m.StringWrite(&n)
	return int(n)
}

type byteCounter int

func (c *byteCounter) WriteString(s string) (int, error) {
	*c += byteCounter(len(s))
	return len(s), nil
}

func (s *Server) onOptions(req *sip.Request, tx sip.ServerTransaction) {
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO, PRACK, REFER, NOTIFY, MESSAGE"))
	_ = tx.Respond(res)
}

func (s *Server) count(what string) {
	if s.deps.Metrics != nil {
		s.deps.Metrics.requests.WithLabelValues(what).Inc()
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
