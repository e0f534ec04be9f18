package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"pushd/component/dispatch"
	"pushd/component/payload"
	"pushd/internal/apnstest"
)

// What the SIP side needs of the dispatcher (issue 12): each push's end
// told to its producer, dead tokens handed to the registration's owner,
// call pushes ahead of message pushes, reg-refresh as a background push.

// fnProvider answers each attempt with f.
type fnProvider func(ctx context.Context, p dispatch.Push) dispatch.Outcome

func (f fnProvider) Send(ctx context.Context, p dispatch.Push) dispatch.Outcome { return f(ctx, p) }
func (fnProvider) Reset()                                                       {}

// finals collects what Done hears.
type finals struct {
	mu  sync.Mutex
	got []dispatch.Final
	ch  chan dispatch.Final
}

func newFinals() *finals { return &finals{ch: make(chan dispatch.Final, 64)} }

func (f *finals) done(fin dispatch.Final) {
	f.mu.Lock()
	f.got = append(f.got, fin)
	f.mu.Unlock()
	f.ch <- fin
}

func (f *finals) all() []dispatch.Final {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]dispatch.Final(nil), f.got...)
}

func (f *finals) next(t *testing.T) dispatch.Final {
	t.Helper()
	select {
	case fin := <-f.ch:
		return fin
	case <-time.After(10 * time.Second):
		t.Fatal("Done not called")
		return dispatch.Final{}
	}
}

func callJob(voip string) dispatch.Job {
	job := msgJob("")
	job.Registration.VoIPToken = voip
	job.Payload = payload.Payload{Type: payload.TypeCall, From: "+4930123", Name: "Caller", CallID: "c1@pbx"}
	return job
}

// TestDoneOutcomes: Done hears every way a push ends, once, with the
// provider's last answer, after the end is committed (the push is no
// longer pending).
func TestDoneOutcomes(t *testing.T) {
	cases := []struct {
		name    string
		answers []apnstest.Answer
		outcome string
		result  dispatch.Result
		status  int
		reason  string
		tries   int
	}{
		{"delivered", nil, "delivered", dispatch.Delivered, 200, "", 1},
		{"dead", []apnstest.Answer{apnstest.Unregistered(time.Now())}, "dead_token", dispatch.Dead, 410, apnstest.ReasonUnregistered, 1},
		{"fatal", []apnstest.Answer{{Status: 400, Reason: apnstest.ReasonBadCollapseID}}, "fatal", dispatch.Fatal, 400, apnstest.ReasonBadCollapseID, 1},
		{"expired", []apnstest.Answer{apnstest.InternalServerError, apnstest.ServiceUnavailable}, "expired", dispatch.Retry, 503,
			apnstest.ReasonServiceUnavailable, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, srv := newAPNS(t)
			srv.Script(tok, c.answers...)
			e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p},
				func(cfg *dispatch.Config) { cfg.MaxAttempts = 2 })
			f := newFinals()
			job := msgJob("")
			job.Done = f.done
			tid, err := e.d.Submit(context.Background(), job)
			if err != nil {
				t.Fatal(err)
			}
			got := f.next(t)
			if e.d.Pending() != 0 {
				t.Fatal("Done called before the end was committed")
			}
			e.d.Close()
			want := dispatch.Final{TrackingID: tid, Outcome: c.outcome, Result: c.result, Status: c.status, Reason: c.reason}
			if all := f.all(); len(all) != 1 || got != want || got.Delivered() != (c.outcome == "delivered") {
				t.Fatalf("Done heard %+v, want once %+v", all, want)
			}
			if n := len(srv.Requests()); n != c.tries {
				t.Fatalf("%d requests, want %d", n, c.tries)
			}
		})
	}
}

// TestDoneCoalesced: a message push replaced by a newer one while held
// ends as coalesced, and its producer hears it; the newer one is
// delivered.
func TestDoneCoalesced(t *testing.T) {
	p, srv := newAPNS(t)
	e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, nil)
	defer e.d.Close()
	gate := make(chan struct{})
	e.clk.mu.Lock()
	e.clk.gate = gate // hold the coalescing window open
	e.clk.mu.Unlock()
	ctx := context.Background()
	f := newFinals()
	submit := func() string {
		job := msgJob("")
		job.Done = f.done
		tid, err := e.d.Submit(ctx, job)
		if err != nil {
			t.Fatal(err)
		}
		return tid
	}
	first := submit()
	srv.WaitRequests(1, 5*time.Second)
	held := submit()
	newer := submit() // replaces held
	byID := map[string]dispatch.Final{}
	for range 2 { // the first's and the held one's, in either order
		fin := f.next(t)
		byID[fin.TrackingID] = fin
	}
	if fin := byID[first]; !fin.Delivered() {
		t.Fatalf("first: %+v", fin)
	}
	if fin := byID[held]; fin != (dispatch.Final{TrackingID: held, Outcome: "coalesced", Result: dispatch.Retry}) {
		t.Fatalf("held: %+v", fin)
	}
	close(gate)
	if fin := f.next(t); fin.TrackingID != newer || !fin.Delivered() {
		t.Fatalf("newer: %+v", fin)
	}
	if e.final("coalesced") != 1 || len(srv.Requests()) != 2 {
		t.Fatalf("coalesced=%v requests=%d", e.final("coalesced"), len(srv.Requests()))
	}
}

// TestDoneNotCalledWhenSubmitFails: a caller that got an error from Submit
// is never told again — neither for a job refused outright nor for one
// whose record failed after it went to its worker (a tracking id Submit
// makes up is routed while its record commits).
func TestDoneNotCalledWhenSubmitFails(t *testing.T) {
	sent := make(chan string, 8)
	prov := fnProvider(func(_ context.Context, p dispatch.Push) dispatch.Outcome {
		sent <- p.TrackingID
		return dispatch.Outcome{Result: dispatch.Delivered, Status: 200}
	})
	db := openDB(t, "")
	e := start(t, db, map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: prov}, func(c *dispatch.Config) { c.Workers = 1 })
	f := newFinals()
	ctx := context.Background()

	bad := msgJob("")
	bad.Registration.Token = ""
	bad.Done = f.done
	if _, err := e.d.Submit(ctx, bad); !errors.Is(err, dispatch.ErrInvalid) {
		t.Fatalf("no token: %v", err)
	}
	ok := msgJob(dispatch.NewTrackingID())
	ok.Done = f.done
	if _, err := e.d.Submit(ctx, ok); err != nil {
		t.Fatal(err)
	}
	f.next(t)
	if _, err := e.d.Submit(ctx, ok); !errors.Is(err, dispatch.ErrDuplicate) {
		t.Fatalf("answered id again: %v", err)
	}

	// The database goes away: records fail, pushes already routed are
	// sent all the same.
	<-sent
	db.Close()
	lost := msgJob("")
	lost.Done = f.done
	tid, err := e.d.Submit(ctx, lost)
	if err == nil {
		t.Fatal("Submit succeeded without its record")
	}
	probe := msgJob("")
	probe.Registration.Token = strings.Repeat("0f", 32)
	_, _ = e.d.Submit(ctx, probe)
	// One worker: once the probe is sent, the push before it has ended.
	for id := range sent {
		if id != tid {
			break
		}
	}
	e.d.Close()
	if all := f.all(); len(all) != 1 {
		t.Fatalf("Done heard %+v; want only the accepted push", all)
	}
}

// TestCallsFirst: with every worker busy and message pushes queued — new
// ones, and one back from its backoff — a call push submitted last is the
// next one sent.
func TestCallsFirst(t *testing.T) {
	var mu sync.Mutex
	var order []string
	sent := make(chan string, 64)
	release := make(chan struct{})
	tries := map[string]int{}
	prov := fnProvider(func(ctx context.Context, p dispatch.Push) dispatch.Outcome {
		label := p.Registration.ID
		mu.Lock()
		order = append(order, label)
		tries[label]++
		n := tries[label]
		mu.Unlock()
		sent <- label
		switch {
		case label == "a" && n == 1:
			return dispatch.Outcome{Result: dispatch.Retry, Status: 503}
		case label == "b":
			select {
			case <-release:
			case <-ctx.Done():
				return dispatch.Outcome{Result: dispatch.Retry, Err: ctx.Err()}
			}
		}
		return dispatch.Outcome{Result: dispatch.Delivered, Status: 200}
	})
	e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: prov}, func(c *dispatch.Config) {
		c.Workers = 1
		c.AttemptTimeout = time.Minute
	})
	defer e.d.Close()
	gate := make(chan struct{})
	e.clk.mu.Lock()
	e.clk.gate = gate // holds a's backoff
	e.clk.mu.Unlock()
	ctx := context.Background()
	submit := func(label string, job dispatch.Job) {
		t.Helper()
		job.Registration.ID = label
		if _, err := e.d.Submit(ctx, job); err != nil {
			t.Fatal(err)
		}
	}
	msg := func(i int) dispatch.Job {
		job := msgJob("")
		job.Registration.Token = fmt.Sprintf("%064x", i+1)
		return job
	}
	wait := func(label string) {
		t.Helper()
		select {
		case got := <-sent:
			if got != label {
				t.Fatalf("sent %s, want %s", got, label)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not sent", label)
		}
	}
	submit("a", msg(100)) // answered 503: waits for its backoff
	wait("a")
	submit("b", msg(101)) // the one worker is held here
	wait("b")
	const n = 5
	for i := range n {
		submit(fmt.Sprintf("m%d", i), msg(i))
	}
	close(gate) // a is queued again, behind the messages
	time.Sleep(50 * time.Millisecond)
	submit("call", callJob(strings.Repeat("cd", 32)))
	close(release)
	e.waitIdle(t)
	mu.Lock()
	got := strings.Join(order, " ")
	mu.Unlock()
	if want := "a b call m0 m1 m2 m3 m4 a"; got != want {
		t.Fatalf("sent in order %q, want %q", got, want)
	}
}

// TestDeadTokenRoutedToOwner: a dead token goes to the hook of its
// registration's owner only. A SIP binding's dead VoIP token reaches the
// SIP hook and never the component's; with no hook for the owner it is
// logged without the token and counted.
func TestDeadTokenRoutedToOwner(t *testing.T) {
	p, srv := newAPNS(t)
	voip := strings.Repeat("cd", 32)
	e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, nil)
	defer e.d.Close()
	sip := &hook{}
	e.d.Route(dispatch.OwnerSIP, sip)
	ctx := context.Background()
	call := callJob(voip)
	call.Registration.Owner = dispatch.OwnerSIP
	srv.Script(voip, apnstest.Unregistered(time.Now()), apnstest.Unregistered(time.Now()))
	if _, err := e.d.Submit(ctx, call); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t)
	if got := sip.got(); len(got) != 1 || got[0].Token != voip || got[0].Channel != payload.ChannelVoIP ||
		got[0].Registration.Owner != dispatch.OwnerSIP {
		t.Fatalf("SIP hook got %+v", got)
	}
	if got := e.hook.got(); len(got) != 0 {
		t.Fatalf("component hook got a SIP binding's token: %+v", got)
	}

	// The component's own registrations still go to Deps.DeadToken.
	srv.Script(tok, apnstest.Unregistered(time.Now()))
	if _, err := e.d.Submit(ctx, msgJob("")); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t)
	if got := e.hook.got(); len(got) != 1 || got[0].Token != tok || len(sip.got()) != 1 {
		t.Fatalf("component hook got %+v, SIP hook %+v", got, sip.got())
	}

	// No hook for the owner: logged, counted, told to nobody else.
	e.d.Route(dispatch.OwnerSIP, nil)
	if _, err := e.d.Submit(ctx, call); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t)
	if len(sip.got()) != 1 || len(e.hook.got()) != 1 {
		t.Fatalf("hooks heard of an unrouted token: SIP %+v, component %+v", sip.got(), e.hook.got())
	}
	if n := counter(e.reg, "pushd_dispatch_dead_tokens_unrouted_total", "owner", "sip"); n != 1 {
		t.Fatalf("unrouted = %v", n)
	}
	logs := e.logText()
	if !strings.Contains(logs, "dead token of an owner with no hook") || strings.Contains(logs, voip) {
		t.Fatalf("log:\n%s", logs)
	}
}

// TestOwnerSurvivesRestart: a SIP push resumed after a restart still hands
// its dead token to the SIP hook (the owner is part of the record).
func TestOwnerSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	b := blocked{called: make(chan string, 1)}
	e1 := start(t, db, map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: b}, nil)
	voip := strings.Repeat("cd", 32)
	call := callJob(voip)
	call.Registration.Owner = dispatch.OwnerSIP
	if _, err := e1.d.Submit(context.Background(), call); err != nil {
		t.Fatal(err)
	}
	<-b.called
	e1.d.Close()
	db.Close()

	db = openDB(t, dir)
	defer db.Close()
	routed := make(chan struct{})
	dead := fnProvider(func(ctx context.Context, _ dispatch.Push) dispatch.Outcome {
		<-routed // the SIP side registers its hook after New
		return dispatch.Outcome{Result: dispatch.Dead, Status: 410, Reason: "Unregistered"}
	})
	e2 := start(t, db, map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: dead}, nil)
	defer e2.d.Close()
	sip := &hook{}
	e2.d.Route(dispatch.OwnerSIP, sip)
	close(routed)
	e2.waitIdle(t)
	if got := sip.got(); len(got) != 1 || got[0].Token != voip || len(e2.hook.got()) != 0 {
		t.Fatalf("SIP hook %+v, component hook %+v", got, e2.hook.got())
	}
}

// TestCallGivesUpSoon: a call push that keeps failing is given up within
// CallMaxAge (its producer hears "expired" while the caller still waits),
// where a message push would keep trying.
func TestCallGivesUpSoon(t *testing.T) {
	p, srv := newAPNS(t)
	srv.SetFallback(apnstest.ServiceUnavailable)
	e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, nil)
	defer e.d.Close()
	f := newFinals()
	call := callJob(strings.Repeat("cd", 32))
	call.Done = f.done
	if _, err := e.d.Submit(context.Background(), call); err != nil {
		t.Fatal(err)
	}
	fin := f.next(t)
	// Backoffs 375 ms, 750 ms, 1.5 s, 3 s; the next one (6 s) would end
	// after 10 s: given up after 5 attempts, at 5.6 s on the clock.
	if fin.Outcome != "expired" || fin.Status != 503 || len(srv.Requests()) != 5 {
		t.Fatalf("call push: %+v after %d requests", fin, len(srv.Requests()))
	}
	if s := e.clk.Sleeps(); len(s) != 4 {
		t.Fatalf("backoffs %v", s)
	}
}

// TestRegRefreshThroughDispatcher: a reg-refresh for a phone with a VoIP
// token goes to its message token as a background push; a non-call push
// forced onto the VoIP channel is refused at Submit.
func TestRegRefreshThroughDispatcher(t *testing.T) {
	p, srv := newAPNS(t)
	e := start(t, openDB(t, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, nil)
	defer e.d.Close()
	job := msgJob("")
	job.Registration.VoIPToken = strings.Repeat("cd", 32)
	job.Registration.Owner = dispatch.OwnerSIP
	job.Payload = payload.Payload{Type: payload.TypeRegRefresh}
	tid, err := e.d.Submit(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t)
	r := srv.Requests()
	if len(r) != 1 || r[0].Token != tok || r[0].PushType != "background" || r[0].Priority != "5" || r[0].ApnsID != tid ||
		!strings.HasPrefix(string(r[0].Body), `{"aps":{"content-available":1},"v":1,`) {
		t.Fatalf("requests %+v", r)
	}
	job.Channel = payload.ChannelVoIP
	if _, err := e.d.Submit(context.Background(), job); !errors.Is(err, dispatch.ErrInvalid) {
		t.Fatalf("reg-refresh on the VoIP channel: %v", err)
	}
}
