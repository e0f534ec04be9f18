package bench_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"pushd/internal/bench"
	"pushd/internal/peertest"
)

const benchPW = "bench-pw"

func prosody(t *testing.T, users int) *peertest.ProsodyServer {
	t.Helper()
	s := peertest.Prosody(t, peertest.ProsodyOptions{LogLevel: "warn", MaxFiles: 65536})
	names := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprintf("bench%d", i)
	}
	s.AddAccounts(t, benchPW, names...)
	return s
}

// TestC2SProsody runs a small bench against Prosody: it proves the client
// against a real server and logs the numbers.
func TestC2SProsody(t *testing.T) {
	if testing.Short() {
		t.Skip("real-server bench skipped with -short")
	}
	s := prosody(t, 21)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := bench.RunC2S(ctx, bench.Config{
		Addr: s.Addr, Domain: s.Domain, Password: benchPW, InsecureTLS: true,
		Pairs: 2, Messages: 500, ServerPID: s.PID(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prosody: %v", res)
	if res.Messages != 2*500 {
		t.Errorf("received %d messages, want %d", res.Messages, 1000)
	}

	base, err := bench.RSS(s.PID())
	if err != nil {
		t.Fatal(err)
	}
	idle, err := bench.ConnectIdle(ctx, bench.IdleConfig{
		Addr: s.Addr, Domain: s.Domain, Password: benchPW, UserPattern: "bench%d", InsecureTLS: true,
		Sessions: 10, StreamManagement: true, Drop: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := bench.Barrier(ctx, s.Addr, s.Domain, bench.Credentials{User: "bench20", Password: benchPW}, true); err != nil {
		t.Fatal(err)
	}
	after, err := bench.RSS(s.PID())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prosody RSS %d KiB → %d KiB with 10 hibernated sessions", base>>10, after>>10)
}

// TestC2SProsodyNumbers prints the numbers that go into the docs. It runs
// only with PUSHD_BENCH_NUMBERS=1 (it takes about a minute):
//
//	PUSHD_BENCH_NUMBERS=1 go test ./internal/bench -run Numbers -v
func TestC2SProsodyNumbers(t *testing.T) {
	if os.Getenv("PUSHD_BENCH_NUMBERS") != "1" {
		t.Skip("set PUSHD_BENCH_NUMBERS=1 to measure Prosody")
	}
	const idleN = 2000
	s := prosody(t, 101)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, pairs := range []int{1, 10, 50} {
		res, err := bench.RunC2S(ctx, bench.Config{
			Addr: s.Addr, Domain: s.Domain, Password: benchPW, InsecureTLS: true,
			Pairs: pairs, Duration: 10 * time.Second, Window: 32, ServerPID: s.PID(),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("NUMBERS prosody c2s window=32 duration=10s: %v", res)
	}
	barrier := bench.Credentials{User: fmt.Sprintf("bench%d", idleN), Password: benchPW}
	// Each measurement gets a fresh server: Lua does not give freed memory
	// back, so a second measurement on the same process would read low.
	measure := func(name string, sm, drop bool) {
		s := prosody(t, idleN+1)
		if err := bench.Barrier(ctx, s.Addr, s.Domain, barrier, true); err != nil {
			t.Fatal(err)
		}
		before, _ := bench.RSS(s.PID())
		idle, err := bench.ConnectIdle(ctx, bench.IdleConfig{
			Addr: s.Addr, Domain: s.Domain, UserPattern: "bench%d", Password: benchPW, InsecureTLS: true,
			Sessions: idleN, StreamManagement: sm, Drop: drop,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()
		if err := bench.Barrier(ctx, s.Addr, s.Domain, barrier, true); err != nil {
			t.Fatal(err)
		}
		after, _ := bench.RSS(s.PID())
		t.Logf("NUMBERS prosody %s sessions=%d sm=%v: RSS %.1f MiB → %.1f MiB = %.1f KiB/session (login %v)",
			name, idleN, sm, float64(before)/(1<<20), float64(after)/(1<<20),
			float64(after-before)/1024/idleN, idle.Login.Round(time.Millisecond))
	}
	measure("idle", false, false)
	measure("idle-sm", true, false)
	measure("hibernated", true, true)
}
