package component

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"pushd/component/dispatch"
	"pushd/component/payload"
)

// Recorder wraps providers so a caller can see the provider's answers to
// the pushes it watches (`pushd push test` prints them). Unwatched pushes
// pass through untouched.
type Recorder struct {
	mu    sync.Mutex
	watch map[string]chan dispatch.Outcome
	// watching counts watch's entries, so that an attempt nobody watches
	// (nearly all of them) passes without taking mu.
	watching atomic.Int32
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{watch: map[string]chan dispatch.Outcome{}} }

// Wrap returns p reporting to r.
func (r *Recorder) Wrap(p dispatch.Provider) dispatch.Provider { return recorded{p, r} }

// Watch starts recording the attempts of tracking id tid.
func (r *Recorder) Watch(tid string) <-chan dispatch.Outcome {
	ch := make(chan dispatch.Outcome, 64)
	r.mu.Lock()
	if _, ok := r.watch[tid]; !ok {
		r.watching.Add(1)
	}
	r.watch[tid] = ch
	r.mu.Unlock()
	return ch
}

// Unwatch stops recording tid.
func (r *Recorder) Unwatch(tid string) {
	r.mu.Lock()
	if _, ok := r.watch[tid]; ok {
		r.watching.Add(-1)
		delete(r.watch, tid)
	}
	r.mu.Unlock()
}

type recorded struct {
	dispatch.Provider
	r *Recorder
}

func (p recorded) Send(ctx context.Context, push dispatch.Push) dispatch.Outcome {
	out := p.Provider.Send(ctx, push)
	if p.r.watching.Load() == 0 {
		return out
	}
	p.r.mu.Lock()
	ch := p.r.watch[push.TrackingID]
	p.r.mu.Unlock()
	if ch != nil {
		select {
		case ch <- out:
		default:
		}
	}
	return out
}

// ErrPushDisabled: the test push was not sent, the push switch is off (O2).
var ErrPushDisabled = errors.New("push switch is off: not sent")

// TestResult is the provider's answer to one test push.
type TestResult struct {
	Node       string
	Provider   dispatch.ProviderName
	TrackingID string
	Attempts   []dispatch.Outcome
	Err        error // refused by the dispatcher, or no final answer before ctx ended
}

// TestPush sends a test push to every device of account through the real
// path (registry → dispatcher → provider) and waits for each provider's
// final answer (delivered, dead token, fatal) or ctx's end.
func TestPush(ctx context.Context, reg *Registry, d Submitter, rec *Recorder, account string) ([]TestResult, error) {
	devs, err := reg.ByAccount(bareJID(account))
	if err != nil {
		return nil, err
	}
	if len(devs) == 0 {
		return nil, ErrNotFound
	}
	out := make([]TestResult, len(devs))
	var wg sync.WaitGroup
	for i, dev := range devs {
		tid := dispatch.NewTrackingID()
		out[i] = TestResult{Node: dev.Node, Provider: dev.Provider, TrackingID: tid}
		ch := rec.Watch(tid)
		// The push switch (O2) ends a push without an attempt to watch.
		off := make(chan struct{})
		job := dispatch.Job{TrackingID: tid, Registration: dev.Registration(),
			Payload: payload.Payload{Type: payload.TypeMessage, Body: "pushd test push", Count: 1},
			Done: func(f dispatch.Final) {
				if f.Disabled() {
					close(off)
				}
			}}
		if _, err := d.Submit(ctx, job); err != nil {
			rec.Unwatch(tid)
			out[i].Err = err
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer rec.Unwatch(tid)
			for {
				select {
				case o := <-ch:
					out[i].Attempts = append(out[i].Attempts, o)
					if o.Result != dispatch.Retry {
						return
					}
				case <-off:
					out[i].Err = ErrPushDisabled
					return
				case <-ctx.Done():
					out[i].Err = ctx.Err()
					return
				}
			}
		}()
	}
	wg.Wait()
	return out, nil
}
