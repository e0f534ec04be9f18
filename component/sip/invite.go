package sip

import (
	"context"
	"net"
	"strings"
	"sync"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"pushd/component/payload"
	"pushd/component/sip/call"
)

// callCtx is what the runner keeps of a held INVITE beside the machine:
// the caller's transaction, the branches, and the caller ID for pushes.
// The machine decides; callCtx only carries out.
type callCtx struct {
	id     call.ID
	aor    string
	req    *sip.Request
	tx     sip.ServerTransaction
	tag    string // To tag of the responses pushd makes itself
	caller callerID
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	branches map[string]*branch // by binding id
	bindings map[string]Binding // the AOR's bindings as the call saw them
	answered bool               // the caller has its final response
	admitted bool               // the machine has stepped its Invite (guarded by Server.mu)
	done     chan struct{}      // closed when the caller's transaction may end
	finished bool
}

// callerID is what a call push shows (C2).
type callerID struct{ name, number string }

// branch is one INVITE pushd sent to a binding.
type branch struct {
	binding Binding
	req     *sip.Request
	mu      sync.Mutex
	// got1xx: any provisional came (a CANCEL may be sent only then, RFC
	// 3261 §9.1); final: the branch's final response.
	got1xx bool
	final  *sip.Response
	// cancel is set when the machine cancelled the branch before it could
	// be: the CANCEL goes with the first provisional.
	cancel    *call.Reason
	cancelled bool
}

// onInvite handles a new INVITE (no To tag) for one of our users: the
// machine holds it while the phones are pushed; the handler blocks until
// the caller has a final answer, because sipgo ends the transaction when
// it returns. In-dialog INVITEs are routed through the dialog.
func (s *Server) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil {
		if _, ok := to.Params.Get("tag"); ok {
			s.inDialog(req, tx)
			return
		}
	}
	// §16.4: a Route naming us (a phone with pushd as its outbound proxy)
	// is ours to remove; the call is then for one of our users like any
	// other. A Route on to anywhere else is a relay pushd does not do: it
	// would carry anyone's call to a PBX that trusts it.
	for route := req.Route(); route != nil; route = req.Route() {
		if !s.isUs(route.Address) {
			s.reply(tx, req, 403, "Forbidden")
			return
		}
		req.RemoveHeader("Route")
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() <= 0 {
		s.reply(tx, req, 483, "Too Many Hops")
		return
	}
	if !s.ourDomain(req.Recipient.Host) || req.Recipient.User == "" {
		s.reply(tx, req, 404, "Not Found")
		return
	}
	if !s.trusted(req.Source()) {
		if _, ok := s.auth.check(s, req, tx, true); !ok {
			return
		}
	}
	aor := aorOf(req.Recipient.User, s.cfg.Domain)
	id := call.ID(req.CallID().Value())
	ctx, cancel := context.WithCancel(context.Background())
	c := &callCtx{id: id, aor: aor, req: req, tx: tx, tag: sip.GenerateTagN(10), caller: callerOf(req),
		ctx: ctx, cancel: cancel, branches: map[string]*branch{}, bindings: map[string]Binding{}, done: make(chan struct{})}
	bindings := s.reg.Bindings(aor, s.cfg.Now())
	mb := make([]call.Binding, 0, len(bindings))
	for _, b := range bindings {
		c.bindings[b.ID] = b
		mb = append(mb, s.machineBinding(b))
	}
	s.mu.Lock()
	if _, dup := s.calls[id]; dup || s.closing {
		s.mu.Unlock()
		cancel()
		s.reply(tx, req, 482, "Loop Detected") // a merged request, RFC 3261 §8.2.2.2
		return
	}
	s.calls[id] = c
	s.mu.Unlock()
	tx.OnCancel(func(*sip.Request) { s.step(call.Cancelled{Call: id}) })
	s.count("invite")
	s.step(call.Invite{Call: id, AOR: aor, Bindings: mb})
	select {
	case <-c.done:
	case <-tx.Done():
	}
}

// fork sends the call's INVITE to a binding. late: the call already
// ended, and the phone gets it only to close its CallKit screen (C8): the
// branch is cancelled with reason as soon as it may be.
func (s *Server) fork(c *callCtx, id string, reason call.Reason, late bool) {
	b, ok := s.binding(c, id)
	if !ok {
		return
	}
	req := c.req.Clone()
	uri := sip.Uri{}
	if err := sip.ParseUri(b.Contact, &uri); err != nil {
		s.step(call.Final{Call: c.id, Binding: id, Code: 480})
		return
	}
	req.Recipient = uri
	req.RemoveHeader("Proxy-Authorization")
	req.SetDestination(destination(b, uri))
	req.SetTransport(b.Transport)
	br := &branch{binding: b, req: req}
	if late {
		br.cancel = &reason
	}
	c.mu.Lock()
	c.branches[id] = br
	c.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.runBranch(c, br, late)
	}()
}

// destination is where a branch goes: the contact's address, or for a
// phone on a connection (TCP, TLS) the address its REGISTER came from,
// which is the connection a NATed phone can be reached on.
func destination(b Binding, uri sip.Uri) string {
	if b.Transport != "udp" && b.Source != "" {
		return b.Source
	}
	port := uri.Port
	if port == 0 {
		port = 5060
	}
	return net.JoinHostPort(uri.Host, itoa(port))
}

// runBranch is one client transaction: responses relayed to the caller
// and told to the machine, the CANCEL sent when it may be.
func (s *Server) runBranch(c *callCtx, br *branch, late bool) {
	tx, err := s.client.TransactionRequest(c.ctx, br.req, decreaseMaxForwards, sipgo.ClientRequestAddVia, s.addRecordRoute, s.fromListener)
	if err != nil {
		s.log.Info("sip: branch failed", "err", err)
		if !late {
			s.step(call.Final{Call: c.id, Binding: br.binding.ID, Code: 503})
		}
		return
	}
	defer tx.Terminate()
	for {
		select {
		case res, more := <-tx.Responses():
			if !more {
				return
			}
			code := res.StatusCode
			if code < 200 {
				br.mu.Lock()
				first := !br.got1xx
				br.got1xx = true
				pending := br.cancel
				br.mu.Unlock()
				if first && pending != nil {
					s.sendCancel(c, br, *pending)
				}
				// A cancelled branch's responses are no longer the
				// machine's: the binding may have a new branch already.
				if late || code == 100 || pending != nil {
					continue
				}
				c.relay(s, res)
				s.step(call.Provisional{Call: c.id, Binding: br.binding.ID, Code: code})
				continue
			}
			br.mu.Lock()
			br.final = res
			dropped := br.cancel != nil || br.cancelled
			br.mu.Unlock()
			if late || dropped {
				if code < 300 {
					// The phone answered a call that was over: hang it up.
					s.bye(c, br, res)
				}
				return
			}
			if code < 300 {
				c.relay(s, res)
			}
			s.step(call.Final{Call: c.id, Binding: br.binding.ID, Code: code})
			if code >= 300 {
				return
			}
		case <-tx.Done():
			if err := tx.Err(); err != nil && !late {
				br.mu.Lock()
				answered := br.final != nil
				br.mu.Unlock()
				if !answered {
					s.step(call.Final{Call: c.id, Binding: br.binding.ID, Code: 408})
				}
			}
			return
		}
	}
}

// cancelBranch carries out the machine's CancelBranch: now if the branch
// has had a provisional, else with its first one.
func (c *callCtx) cancelBranch(s *Server, id string, reason call.Reason) {
	c.mu.Lock()
	br := c.branches[id]
	c.mu.Unlock()
	if br == nil {
		return
	}
	br.mu.Lock()
	ready := br.got1xx && br.final == nil
	if !ready && br.final == nil {
		br.cancel = &reason
	}
	br.mu.Unlock()
	if ready {
		s.sendCancel(c, br, reason)
	}
}

// sendCancel sends the CANCEL of a branch: same Request-URI, Call-ID,
// From, To, CSeq number and top Via as its INVITE (RFC 3261 §9.1), and
// the Reason that tells the phone why (C6, C8).
func (s *Server) sendCancel(c *callCtx, br *branch, reason call.Reason) {
	br.mu.Lock()
	if br.cancelled {
		br.mu.Unlock()
		return
	}
	br.cancelled = true
	br.mu.Unlock()
	inv := br.req
	cr := sip.NewRequest(sip.CANCEL, inv.Recipient)
	cr.AppendHeader(inv.Via().Clone())
	for _, h := range inv.GetHeaders("Route") {
		cr.AppendHeader(h)
	}
	mf := sip.MaxForwardsHeader(70)
	cr.AppendHeader(&mf)
	cr.AppendHeader(sip.HeaderClone(inv.From()))
	cr.AppendHeader(sip.HeaderClone(inv.To()))
	cr.AppendHeader(sip.HeaderClone(inv.CallID()))
	cr.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	if r := reason.String(); r != "" {
		cr.AppendHeader(sip.NewHeader("Reason", r))
	}
	cr.SetTransport(inv.Transport())
	cr.SetDestination(inv.Destination())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// One option and none that builds: sipgo sends the CANCEL as
		// built (with no option at all it adds headers of its own).
		tx, err := s.client.TransactionRequest(context.Background(), cr, s.fromListener)
		if err != nil {
			s.log.Info("sip: cancel failed", "err", err)
			return
		}
		defer tx.Terminate()
		select {
		case <-tx.Responses():
		case <-tx.Done():
		}
	}()
}

// bye hangs up a late branch the phone answered anyway.
func (s *Server) bye(c *callCtx, br *branch, res *sip.Response) {
	req := sip.NewRequest(sip.BYE, br.req.Recipient)
	if ct := res.Contact(); ct != nil {
		req.Recipient = ct.Address
	}
	req.AppendHeader(sip.HeaderClone(br.req.From()))
	req.AppendHeader(sip.HeaderClone(res.To()))
	req.AppendHeader(sip.HeaderClone(br.req.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: br.req.CSeq().SeqNo + 1, MethodName: sip.BYE})
	req.SetTransport(br.req.Transport())
	req.SetDestination(br.req.Destination())
	go func() {
		tx, err := s.client.TransactionRequest(context.Background(), req, sipgo.ClientRequestAddVia, s.fromListener)
		if err == nil {
			<-tx.Done()
		}
	}()
}

// relay sends a branch's response to the caller, minus our Via.
func (c *callCtx) relay(s *Server, res *sip.Response) {
	r := res.Clone()
	r.RemoveHeader("Via")
	r.SetDestination(c.req.Source())
	c.mu.Lock()
	final := r.StatusCode >= 200
	if c.answered || (final && c.finished) {
		c.mu.Unlock()
		return
	}
	if final {
		c.answered = true
	}
	c.mu.Unlock()
	if err := c.tx.Respond(r); err != nil {
		s.log.Debug("sip: relay response", "err", err)
	}
	if final {
		c.finish()
	}
}

// respond carries out the machine's Respond: a response pushd makes (180,
// 480, 487) or a branch's final relayed.
func (c *callCtx) respond(s *Server, code int, from string) {
	if from != "" {
		c.mu.Lock()
		br := c.branches[from]
		c.mu.Unlock()
		if br != nil {
			br.mu.Lock()
			res := br.final
			br.mu.Unlock()
			if res != nil {
				c.relay(s, res)
				return
			}
		}
	}
	if code == 487 {
		// sipgo's transaction layer answered the CANCELled INVITE itself.
		c.finish()
		return
	}
	c.mu.Lock()
	if c.answered {
		c.mu.Unlock()
		return
	}
	if code >= 200 {
		c.answered = true
	}
	c.mu.Unlock()
	res := sip.NewResponseFromRequest(c.req, code, reasonPhrase(code), nil)
	res.To().Params.Add("tag", c.tag)
	_ = c.tx.Respond(res)
	if code >= 200 {
		c.finish()
	}
}

// finish lets the INVITE handler return: the caller has its answer.
func (c *callCtx) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.finished {
		c.finished = true
		close(c.done)
	}
}

// release ends what is left of a forgotten call.
func (c *callCtx) release() {
	c.finish()
	c.cancel()
}

func (s *Server) binding(c *callCtx, id string) (Binding, bool) {
	c.mu.Lock()
	b, ok := c.bindings[id]
	c.mu.Unlock()
	if ok {
		return b, true
	}
	// A binding registered after the INVITE came (the pushed phone).
	for _, b := range s.reg.Bindings(c.aor, s.cfg.Now()) {
		if b.ID == id {
			c.mu.Lock()
			c.bindings[id] = b
			c.mu.Unlock()
			return b, true
		}
	}
	return Binding{}, false
}

// pushCall sends one call push (C2, C4–C6) through the dispatcher; a
// push that cannot go is told to the machine, which may answer early.
func (s *Server) pushCall(c *callCtx, id string, t payload.Type) {
	b, ok := s.binding(c, id)
	if !ok || b.Push == nil || s.deps.Pusher == nil {
		if t == payload.TypeCall {
			s.step(call.PushFailed{Call: c.id, Binding: id})
		}
		return
	}
	p := payload.Payload{Type: t, From: c.caller.number, Name: c.caller.name, CallID: string(c.id),
		Node: s.nodeFor(c.aor), TS: s.cfg.Now().UnixMilli()}
	s.submit(b, p, func(ok bool) {
		if !ok && t == payload.TypeCall {
			s.step(call.PushFailed{Call: c.id, Binding: id})
		}
	})
}

// callerOf is the caller ID of an INVITE: From's display name and user.
func callerOf(req *sip.Request) callerID {
	f := req.From()
	if f == nil {
		return callerID{}
	}
	return callerID{name: f.DisplayName, number: f.Address.User}
}

func (s *Server) trusted(source string) bool {
	host, _, err := net.SplitHostPort(source)
	if err != nil {
		return false
	}
	ip, err := parseAddr(host)
	if err != nil {
		return false
	}
	for _, p := range s.cfg.Trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// isUs reports whether a URI names this node (our Record-Route).
func (s *Server) isUs(u sip.Uri) bool {
	addr := hostPort(u)
	for _, a := range []string{s.Addr("udp"), s.Addr("tcp"), s.Addr("tls"), s.cfg.Advertise} {
		if a != "" && strings.EqualFold(a, addr) {
			return true
		}
	}
	return false
}

func reasonPhrase(code int) string {
	switch code {
	case 180:
		return "Ringing"
	case 408:
		return "Request Timeout"
	case 480:
		return "Temporarily Unavailable"
	case 487:
		return "Request Terminated"
	case 503:
		return "Service Unavailable"
	}
	return ""
}
