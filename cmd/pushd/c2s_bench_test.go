package main

import (
	"context"
	"fmt"
	"testing"

	"pushd/internal/bench"
)

// BenchmarkC2SMessages drives an in-process node with the c2s bench
// client (10 pairs, 32 messages in flight each) so that the router's hot
// path can be profiled with -cpuprofile; b.N is the number of messages.
func BenchmarkC2SMessages(b *testing.B) {
	n := startTestNode(b, func(c *fileConfig) { c.C2S.RateLimit = 0; c.Log.Level = "warn" })
	const pairs = 10
	for i := range 2 * pairs {
		n.addUser(fmt.Sprintf("bench%d", i), "bench-pw")
	}
	b.ResetTimer()
	res, err := bench.RunC2S(context.Background(), bench.Config{
		Addr: n.c2s(), Domain: "localhost", Password: "bench-pw", InsecureTLS: true,
		Pairs: pairs, Messages: max(b.N/pairs, 1), Window: 32,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.MsgsPerSec, "msgs/s")
	b.ReportMetric(float64(res.P99.Microseconds()), "p99-µs")
}
