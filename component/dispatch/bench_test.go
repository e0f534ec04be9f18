package dispatch_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"

	"pushd/component/dispatch"
	"pushd/component/payload"
	"pushd/internal/apnstest"
)

// BenchmarkAPNSRaw is the ceiling: the apns2 client straight to the APNS
// test server, 16 concurrent pushes on 2 cores (the dispatcher's default
// workers).
func BenchmarkAPNSRaw(b *testing.B) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := apnstest.NewServer(apnstest.Options{TokenKey: &k.PublicKey})
	defer srv.Close()
	c := apns2.NewTokenClient(&token.Token{AuthKey: k, KeyID: "KEY1234567", TeamID: "TEAM123456"})
	c.Host, c.HTTPClient = srv.URL, srv.Client()
	sealed, _ := payload.Prepare(&devKey, payload.Payload{Type: payload.TypeMessage, Body: "hello"}, "")
	body, _ := payload.APNSBody(payload.ChannelMessage, dispatch.NewTrackingID(), sealed)
	b.SetParallelism(dispatch.DefaultConfig().Workers / 2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			// The request the dispatcher sends, without the dispatcher.
			n := &apns2.Notification{DeviceToken: tok, Topic: "com.example.pushd", Payload: body, Priority: 10}
			resp, err := c.PushWithContext(context.Background(), n)
			if err != nil || resp.StatusCode != 200 {
				b.Fatalf("%v %+v", err, resp)
			}
		}
	})
}

// BenchmarkDispatchAPNS: the same pushes through Submit (seal, persist in
// badger, queue, worker, apns2, answer recorded).
func BenchmarkDispatchAPNS(b *testing.B) {
	p, _ := newAPNS(b)
	e := start(b, openDB(b, ""), map[dispatch.ProviderName]dispatch.Provider{dispatch.APNS: p}, func(c *dispatch.Config) {
		c.CoalesceWindow = 0
		c.DeviceBurst = 1 << 30
	})
	defer e.d.Close()
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		job := msgJob("")
		job.Registration.Token = fmt.Sprintf("%064x", i)
		if _, err := e.d.Submit(ctx, job); err != nil {
			b.Fatal(err)
		}
	}
	e.waitIdle(b)
}
