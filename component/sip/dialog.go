package sip

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"pushd/component/sip/call"
)

// inDialog proxies a request inside a dialog pushd record-routed (BYE,
// re-INVITE, UPDATE, INFO, …): loose routing, RFC 3261 §16.4 and §16.12.
// A BYE also ends the machine's call (M7).
func (s *Server) inDialog(req *sip.Request, tx sip.ServerTransaction) {
	next, ok := s.nextHop(req)
	if !ok {
		s.reply(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() <= 0 {
		s.reply(tx, req, 483, "Too Many Hops")
		return
	}
	if req.Method == sip.BYE {
		if id := req.CallID(); id != nil {
			s.step(call.Hangup{Call: call.ID(id.Value())})
		}
	}
	fwd := req.Clone()
	fwd.SetDestination(next)
	opts := []sipgo.ClientRequestOption{decreaseMaxForwards, sipgo.ClientRequestAddVia, s.fromListener}
	if req.IsInvite() {
		opts = append(opts, s.addRecordRoute)
	}
	ctx := sip.ServerTransactionContext(tx)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ctx = context.WithoutCancel(ctx) // the client transaction lives its own life
	cl, err := s.client.TransactionRequest(ctx, fwd, opts...)
	if err != nil {
		s.reply(tx, req, 503, "Service Unavailable")
		return
	}
	defer cl.Terminate()
	for {
		select {
		case res, more := <-cl.Responses():
			if !more {
				return
			}
			r := res.Clone()
			r.RemoveHeader("Via")
			r.SetDestination(req.Source())
			_ = tx.Respond(r)
			if r.StatusCode >= 200 {
				return
			}
		case <-cl.Done():
			if cl.Err() != nil {
				s.reply(tx, req, 408, "Request Timeout")
			}
			return
		case <-tx.Done():
			return
		}
	}
}

// onAck forwards the ACK of a 2xx along the dialog (stateless, §16.11);
// the ACK of a non-2xx never reaches here: the transaction absorbs it.
func (s *Server) onAck(req *sip.Request, _ sip.ServerTransaction) {
	next, ok := s.nextHop(req)
	if mf := req.MaxForwards(); !ok || mf != nil && mf.Val() <= 0 {
		return
	}
	fwd := req.Clone()
	fwd.SetDestination(next)
	if err := s.client.WriteRequest(fwd, decreaseMaxForwards, sipgo.ClientRequestAddVia, s.fromListener); err != nil {
		s.log.Debug("sip: forward ACK", "err", err)
	}
}

// onCancel sees only CANCELs that match no INVITE of ours (sipgo's
// transaction layer answers and reports the others).
func (s *Server) onCancel(req *sip.Request, tx sip.ServerTransaction) {
	s.reply(tx, req, 481, "Call/Transaction Does Not Exist")
}

// nextHop pops our own Route and returns where the request goes: the
// next Route, or its Request-URI. ok false: the request names no route
// through us, or belongs to no call pushd holds, and pushd relays it
// nowhere: anyone can write pushd's Route on a request, and pushd would
// carry it to any address.
func (s *Server) nextHop(req *sip.Request) (string, bool) {
	routes := req.GetHeaders("Route")
	if len(routes) == 0 {
		return "", false
	}
	top, ok := routes[0].(*sip.RouteHeader)
	if !ok || !s.isUs(top.Address) || s.call(call.ID(req.CallID().Value())) == nil {
		return "", false
	}
	req.RemoveHeader("Route")
	if nr := req.Route(); nr != nil {
		return hostPort(nr.Address), true
	}
	return hostPort(req.Recipient), true
}

// decreaseMaxForwards takes one hop off a request pushd forwards. A
// request that came with 0 was refused (483, RFC 3261 §16.3 3); one that
// came with 1 goes on with 0 (§16.6 3), which sipgo's own option refuses.
func decreaseMaxForwards(_ *sipgo.Client, r *sip.Request) error {
	if mf := r.MaxForwards(); mf != nil && mf.Val() > 0 {
		mf.Dec()
	}
	return nil
}

// fromListener sends a UDP request from pushd's listening socket: the
// address phones registered to, so through their NAT pinhole, and the one
// their Via answers come back to. Without it sipgo opens a socket per
// destination it has not heard from, whose reference count can go
// negative, so that neither its close nor the server's closes it.
func (s *Server) fromListener(_ *sipgo.Client, r *sip.Request) error {
	if !strings.EqualFold(r.Transport(), "udp") || s.udp == nil {
		return nil
	}
	a := s.udp.LocalAddr().(*net.UDPAddr)
	r.Laddr = sip.Addr{IP: a.IP, Port: a.Port}
	return nil
}

func hostPort(u sip.Uri) string {
	port := u.Port
	if port == 0 {
		port = 5060
	}
	return net.JoinHostPort(strings.Trim(u.Host, "[]"), itoa(port))
}

func parseAddr(host string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return ip.Unmap(), err
}

// addRecordRoute puts pushd in the dialog's route (RFC 3261 §16.6 4) with
// the address it listens on for the request's transport. sipgo's own
// option reads its listen-port map without the lock its Serve takes.
func (s *Server) addRecordRoute(_ *sipgo.Client, r *sip.Request) error {
	network := strings.ToLower(r.Transport())
	addr := s.Addr(network)
	if addr == "" {
		addr = s.Addr("udp")
	}
	_, port, _ := net.SplitHostPort(addr)
	host, _, _ := net.SplitHostPort(s.cfg.Advertise)
	p, _ := strconv.Atoi(port)
	r.PrependHeader(&sip.RecordRouteHeader{Address: sip.Uri{Host: host, Port: p,
		UriParams: sip.HeaderParams{{K: "transport", V: network}, {K: "lr", V: ""}}}})
	return nil
}
