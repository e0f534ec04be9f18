package sip

import (
	"context"
	"log/slog"
	"strings"

	"pushd/component/dispatch"
	"pushd/component/payload"
	"pushd/internal/logline"
)

// submit hands one push for binding b to the dispatcher; done hears
// whether it was delivered. The key is the binding's own, else the one
// the same app registered over XMPP with the same token; without one the
// push carries no caller ID (S2), only its type, and the log says so.
// All of it runs on a goroutine of its own: finding that registration
// reads the database, which the loop (every call's steps) must not wait
// for.
func (s *Server) submit(b Binding, p payload.Payload, done func(delivered bool)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.submitNow(b, p, done)
	}()
}

func (s *Server) submitNow(b Binding, p payload.Payload, done func(delivered bool)) {
	job, ok := s.job(b, p)
	if !ok {
		if done != nil {
			done(false)
		}
		return
	}
	if done != nil {
		job.Done = func(f dispatch.Final) { done(f.Delivered()) }
	}
	tid, err := s.deps.Pusher.Submit(context.Background(), job)
	if err != nil {
		logline.Log(context.Background(), s.log, slog.LevelWarn, "sip: push refused", slog.String("tid", tid),
			slog.String("type", string(p.Type)), slog.String("err", err.Error()))
		if s.deps.Metrics != nil {
			s.deps.Metrics.pushes.WithLabelValues(string(p.Type), "refused").Inc()
		}
		if done != nil {
			done(false)
		}
		return
	}
	if s.deps.Metrics != nil {
		s.deps.Metrics.pushes.WithLabelValues(string(p.Type), "accepted").Inc()
	}
	s.log.Info("sip: push", "tid", tid, "type", string(p.Type), "call", s.red.Token(p.CallID))
}

// job is the dispatcher's job for a push to binding b; ok false when the
// binding has no token for the push's channel.
func (s *Server) job(b Binding, p payload.Payload) (job dispatch.Job, ok bool) {
	var xmpp dispatch.Registration
	found := false
	if s.deps.Devices != nil {
		xmpp, found = s.deps.Devices.RegistrationByToken(b.Push.Provider, b.Push.PRID)
	}
	reg := b.Registration(xmpp, found)
	if reg.Key == nil {
		s.log.Info("sip: push without caller ID: the device left no key", "type", string(p.Type), "aor", s.red.Token(b.AOR))
	}
	if reg.TokenFor(reg.ChannelFor(p.Type)) == "" {
		// A PushKit-only binding has no token for a refresh push, which
		// must not go on the VoIP channel (iOS wants a call for each).
		s.log.Info("sip: no token for this push", "type", string(p.Type), "aor", s.red.Token(b.AOR))
		return dispatch.Job{}, false
	}
	return dispatch.Job{Registration: reg, Payload: p}, true
}

// refreshPushes sends a reg-refresh push to every push binding that asked
// for them (+sip.pnsreg) and is about to expire unrefreshed (C8).
func (s *Server) refreshPushes() {
	if s.deps.Pusher == nil {
		return
	}
	now := s.cfg.Now()
	for _, b := range s.reg.RefreshDue(now, s.cfg.RefreshPushBefore, s.serves) {
		b.Refreshed = true
		if err := s.reg.Put(b); err != nil {
			s.log.Error("sip: mark refresh push", "err", err)
			continue
		}
		s.submit(b, payload.Payload{Type: payload.TypeRegRefresh, Node: s.nodeFor(b.AOR), TS: now.UnixMilli()}, nil)
	}
}

// DeadToken is the dispatcher's verdict on a SIP binding's token (P3):
// the binding loses its push parameters; the XMPP registration of the
// same phone is the component's business and is left alone.
func (s *Server) DeadToken(_ context.Context, dead dispatch.DeadToken) error {
	aor, id, ok := strings.Cut(dead.Registration.ID, "\x00")
	if !ok {
		return nil
	}
	dropped, err := s.reg.DropPush(aor, id, dead.Token)
	if dropped {
		s.log.Info("sip: push token dead, binding keeps ringing without push", "aor", s.red.Token(aor))
	}
	return err
}

// placement is Config.Placement, or "this node" alone.
func (s *Server) placement(aor string) (self bool, addr string) {
	if s.cfg.Placement == nil {
		return true, s.cfg.Advertise
	}
	return s.cfg.Placement(aor)
}

// serves reports whether this node sends aor's refresh pushes: the node
// serving its user, so that a cluster sends one.
func (s *Server) serves(aor string) bool {
	self, _ := s.placement(aor)
	return self
}

// nodeFor is the SIP address a pushed phone of aor must register to: the
// node serving its user (after a failover, the one that took it over).
func (s *Server) nodeFor(aor string) string {
	if self, addr := s.placement(aor); !self && addr != "" {
		return addr
	}
	return s.cfg.Advertise
}
