package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"pushd/internal/peertest"
)

// TestBenchC2SAgainstProsody measures pushd and Prosody 0.12 with the same
// client in the same run (issue 2's comparison). It takes minutes, so it
// runs only with PUSHD_BENCH_NUMBERS=1; the figures go to
// docs/performance.md. Nothing here asserts a timing.
func TestBenchC2SAgainstProsody(t *testing.T) {
	if os.Getenv("PUSHD_BENCH_NUMBERS") != "1" {
		t.Skip("set PUSHD_BENCH_NUMBERS=1 to measure pushd against Prosody")
	}
	peertest.RequirePeer(t, peertest.PeerProsody)
	exe := filepath.Join(t.TempDir(), "pushd")
	build := exec.Command("go", "build", "-o", exe, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	opts := c2sBenchOptions{Pairs: []int{1, 10, 50}, Duration: 10 * time.Second, Window: 32, Sessions: 2000}
	ctx := context.Background()
	var out strings.Builder
	if err := runC2SBench(ctx, pushdStarter(exe), opts, &out); err != nil {
		t.Fatal(err)
	}
	prosody := func(ctx context.Context, users int) (c2sTarget, func(), error) {
		s := peertest.Prosody(t, peertest.ProsodyOptions{LogLevel: "warn", MaxFiles: 65536})
		names := make([]string, users)
		for i := range names {
			names[i] = "bench" + strconv.Itoa(i)
		}
		s.AddAccounts(t, "bench-pw", names...)
		return c2sTarget{Name: "prosody", Addr: s.Addr, Domain: s.Domain, PID: s.PID(), Pattern: "bench%d", Password: "bench-pw"}, s.Stop, nil
	}
	if err := runC2SBench(ctx, prosody, opts, &out); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
}
