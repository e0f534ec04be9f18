package main

import (
	"context"
	"strings"
	"testing"

	"pushd/internal/peertest"
)

// `pushd bench sip`, small: every call pushed exactly once and ended with
// one 487 and one missed-call push, and the live calls all made through
// pushd and through Kamailio. The figures are for docs/performance.md;
// nothing here looks at a time.
func TestBenchSIPSmall(t *testing.T) {
	live := benchSIPPeersMissing() == ""
	if !live && peertest.InCI() {
		t.Fatalf("under CI the live part's peers must be installed: %s", benchSIPPeersMissing())
	}
	if !live {
		t.Logf("only the push part runs: %s", benchSIPPeersMissing())
	}
	o := benchSIPOptions{Phones: 10, Calls: 40, Rate: 200, Window: 8, LivePhones: 5, LiveCalls: 50, LiveWindow: 5}
	r, err := benchSIP(context.Background(), pushdBinary(t), o, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	r.print(&out, o)
	t.Logf("\n%s", out.String())
	p := r.Push
	if p.Calls != o.Calls || p.Pushed != o.Calls || p.CallPushes != o.Calls || p.Twice != 0 ||
		p.EndPushes != o.Calls || p.Terminated != o.Calls || p.Failed != 0 {
		t.Errorf("push part: %+v, want each of %d calls pushed once, ended with one 487 and one missed-call push", p, o.Calls)
	}
	if p.P50 <= 0 || p.P99 < p.P50 || p.Max < p.P99 {
		t.Errorf("push latencies out of order: p50 %v p99 %v max %v", p.P50, p.P99, p.Max)
	}
	if !live {
		if r.LiveSkipped == "" || len(r.Live) != 0 {
			t.Errorf("live part without its peers: skipped %q, %d results", r.LiveSkipped, len(r.Live))
		}
		return
	}
	if len(r.Live) != 2 || r.Live[0].Name != "pushd" || !strings.HasPrefix(r.Live[1].Name, "kamailio") {
		t.Fatalf("live part: %+v, want pushd then kamailio", r.Live)
	}
	// Every call through pushd is made. Kamailio, the reference, is held
	// to consistent counts only: a datagram lost on a loaded machine may
	// cost a call there, and that is not pushd's bug.
	if l := r.Live[0]; l.Calls != o.LiveCalls || l.Failed != 0 {
		t.Errorf("pushd: %d calls made, %d failed (%s), want %d made", l.Calls, l.Failed, l.Why, o.LiveCalls)
	}
	if l := r.Live[1]; l.Calls+l.Failed != o.LiveCalls || l.Calls == 0 {
		t.Errorf("%s: %d calls made and %d failed (%s) of %d", l.Name, l.Calls, l.Failed, l.Why, o.LiveCalls)
	}
}

// testWriter sends what a bench writes on failure to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
