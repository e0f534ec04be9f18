package sip

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"

	"pushd/component/dispatch"
	"pushd/component/payload"
)

// ErrNoPushBinding: the user has no push binding that has not expired.
var ErrNoPushBinding = errors.New("sip: no push binding")

// TestCallResult is the dispatcher's last word on one push of a test call.
type TestCallResult struct {
	Binding    string // the binding's id
	Provider   dispatch.ProviderName
	Type       payload.Type // call, then missed-call
	TrackingID string
	Final      dispatch.Final
	Err        error // refused, no token for the channel, or no answer before ctx ended
}

// TestCall is `pushd push test --call`: every push binding of user (a
// local part, or user@domain) gets a VoIP call push naming this node, as a
// call would send, and once that is answered its missed-call push: no
// INVITE follows, and the app, which reports every VoIP push as a call
// (C8), must be told the call is over. It returns both answers of each
// binding, waiting until ctx ends.
func (s *Server) TestCall(ctx context.Context, user string) ([]TestCallResult, error) {
	if s.deps.Pusher == nil {
		return nil, errors.New("sip: no push provider configured")
	}
	local, _, _ := strings.Cut(user, "@")
	aor := aorOf(local, s.cfg.Domain)
	var out []TestCallResult
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	callID := "pushd-test-" + hex.EncodeToString(id)
	for _, b := range s.reg.Bindings(aor, s.cfg.Now()) {
		if b.Push == nil {
			continue
		}
		p := payload.Payload{Type: payload.TypeCall, From: "pushd", Name: "pushd test call", CallID: callID,
			Node: s.nodeFor(aor), TS: s.cfg.Now().UnixMilli()}
		r := s.testPush(ctx, b, p)
		out = append(out, r)
		if r.Err == nil && r.Final.Delivered() {
			p.Type = payload.TypeMissedCall
			out = append(out, s.testPush(ctx, b, p))
		}
	}
	if len(out) == 0 {
		return nil, ErrNoPushBinding
	}
	return out, nil
}

// testPush submits one push of a test call and waits for its end.
func (s *Server) testPush(ctx context.Context, b Binding, p payload.Payload) TestCallResult {
	r := TestCallResult{Binding: b.ID, Provider: b.Push.Provider, Type: p.Type}
	job, ok := s.job(b, p)
	if !ok {
		r.Err = errors.New("no token for this push's channel")
		return r
	}
	final := make(chan dispatch.Final, 1)
	job.Done = func(f dispatch.Final) { final <- f }
	var err error
	if r.TrackingID, err = s.deps.Pusher.Submit(ctx, job); err != nil {
		r.Err = err
		return r
	}
	select {
	case r.Final = <-final:
	case <-ctx.Done():
		r.Err = ctx.Err()
	}
	return r
}
