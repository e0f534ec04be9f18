package apns_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"

	"pushd/component/apns"
	"pushd/component/dispatch"
	"pushd/component/payload"
	"pushd/internal/apnstest"
)

const (
	tokMsg  = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	tokVoIP = "0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000"
)

func p8(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func rootsOf(srv *apnstest.Server) *x509.CertPool {
	return srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
}

// newTokenProvider returns a token-auth provider pointed at a server that
// verifies the JWT signature.
func newTokenProvider(t testing.TB) (*apns.Provider, *apnstest.Server) {
	t.Helper()
	return apnstest.NewTokenProvider(t, apnstest.Options{})
}

var key = [32]byte{1, 2, 3}

func push(t testing.TB, ch payload.Channel, typ payload.Type) dispatch.Push {
	t.Helper()
	s, err := payload.Prepare(&key, payload.Payload{Type: typ, From: "romeo@example.net", Body: "hello"}, "")
	if err != nil {
		t.Fatal(err)
	}
	return dispatch.Push{
		TrackingID:   dispatch.NewTrackingID(),
		Registration: dispatch.Registration{Provider: dispatch.APNS, Token: tokMsg, VoIPToken: tokVoIP},
		Channel:      ch, Sealed: s,
	}
}

func TestRequestShape(t *testing.T) {
	p, srv := newTokenProvider(t)
	ctx := context.Background()
	msg := push(t, payload.ChannelMessage, payload.TypeMessage)
	if o := p.Send(ctx, msg); o.Result != dispatch.Delivered || o.Status != 200 {
		t.Fatalf("message: %+v", o)
	}
	voip := push(t, payload.ChannelVoIP, payload.TypeCall)
	if o := p.Send(ctx, voip); o.Result != dispatch.Delivered {
		t.Fatalf("voip: %+v", o)
	}
	reqs := srv.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	m, v := reqs[0], reqs[1]
	now := time.Now().Unix()
	exp, _ := strconv.ParseInt(m.Expiration, 10, 64)
	if m.Token != tokMsg || m.Topic != "com.example.pushd" || m.PushType != "alert" || m.Priority != "10" ||
		m.CollapseID != "pushd-message" || m.ApnsID != msg.TrackingID || m.Proto != "HTTP/2.0" ||
		m.Auth != "token" || m.JWTKeyID != "KEY1234567" || m.JWTIssuer != "TEAM123456" || exp < now+86000 {
		t.Fatalf("message request: %+v", m)
	}
	exp, _ = strconv.ParseInt(v.Expiration, 10, 64)
	if v.Token != tokVoIP || v.Topic != "com.example.pushd.voip" || v.PushType != "voip" || v.Priority != "10" ||
		v.CollapseID != "" || exp > now+31 {
		t.Fatalf("voip request: %+v", v)
	}
	var body struct {
		Aps map[string]any
		V   int
		TID string
		Enc string
	}
	if err := json.Unmarshal(m.Body, &body); err != nil {
		t.Fatal(err)
	}
	got, err := payload.Open(key, body.Enc)
	if err != nil || got.Body != "hello" || body.TID != msg.TrackingID || body.V != 1 || body.Aps["mutable-content"] != float64(1) {
		t.Fatalf("body %s → %+v, %v", m.Body, got, err)
	}
	if strings.Contains(string(m.Body), "hello") || strings.Contains(string(m.Body), "romeo") {
		t.Fatal("personal data in clear in the APNS body")
	}
}

// TestRegRefreshIsBackground: a reg-refresh (C8) reaches the test server
// as a background push on the message token — push type background,
// priority 5, the bundle id as topic, no collapse id — whose body is
// content-available alone, sealed content and tracking id beside it. A
// VoIP push would have to report a call; an alert would show something.
func TestRegRefreshIsBackground(t *testing.T) {
	p, srv := newTokenProvider(t)
	refresh := push(t, payload.ChannelMessage, payload.TypeRegRefresh)
	if o := p.Send(context.Background(), refresh); o.Result != dispatch.Delivered || o.Status != 200 {
		t.Fatalf("reg-refresh: %+v", o)
	}
	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	exp, _ := strconv.ParseInt(r.Expiration, 10, 64)
	now := time.Now().Unix()
	if r.Token != tokMsg || r.Topic != "com.example.pushd" || r.PushType != "background" || r.Priority != "5" ||
		r.CollapseID != "" || r.ApnsID != refresh.TrackingID || exp < now+3500 || exp > now+3700 {
		t.Fatalf("reg-refresh request: %+v", r)
	}
	want := `{"aps":{"content-available":1},"v":1,"tid":"` + refresh.TrackingID + `","enc":"` + refresh.Sealed.Enc + `"}`
	if string(r.Body) != want {
		t.Fatalf("reg-refresh body\n got %s\nwant %s", r.Body, want)
	}
	if got, err := payload.Open(key, refresh.Sealed.Enc); err != nil || got.Type != payload.TypeRegRefresh {
		t.Fatalf("enc → %+v %v", got, err)
	}

	// Apple refuses a background push at priority 10; so does the test
	// server, which keeps the shape above honest.
	cert, pool := clientCert(t)
	strict := apnstest.NewServer(apnstest.Options{ClientCAs: pool})
	defer strict.Close()
	cfg := apns.DefaultConfig()
	cfg.Endpoint, cfg.Topic, cfg.Auth, cfg.Certificate = strict.URL, "com.example.pushd", apns.AuthCertificate, &cert
	cfg.HTTP.RootCAs = rootsOf(strict)
	cfg.Background.Priority = apns2.PriorityHigh
	loud, err := apns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer loud.Close()
	if o := loud.Send(context.Background(), refresh); o.Result != dispatch.Fatal || o.Reason != apnstest.ReasonBadPriority {
		t.Fatalf("background at priority 10: %+v", o)
	}

	// Nothing but the call family rides the VoIP channel.
	silent := push(t, payload.ChannelVoIP, payload.TypeRegRefresh)
	if o := p.Send(context.Background(), silent); o.Result != dispatch.Fatal || len(srv.Requests()) != 1 {
		t.Fatalf("reg-refresh on the VoIP channel: %+v, %d requests", o, len(srv.Requests()))
	}
}

// TestClassify drives the real apns2 client against every answer.
func TestClassify(t *testing.T) {
	p, srv := newTokenProvider(t)
	gone := time.UnixMilli(1700000000000)
	tests := []struct {
		answer apnstest.Answer
		want   dispatch.Result
	}{
		{apnstest.OK, dispatch.Delivered},
		{apnstest.BadDeviceToken, dispatch.Dead},
		{apnstest.DeviceTokenNotForTopic, dispatch.Dead},
		{apnstest.Unregistered(gone), dispatch.Dead},
		{apnstest.TooManyRequests, dispatch.Retry},
		{apnstest.InternalServerError, dispatch.Retry},
		{apnstest.ServiceUnavailable, dispatch.Retry},
		{apnstest.Answer{Status: 403, Reason: "InvalidProviderToken"}, dispatch.Fatal},
		{apnstest.Answer{Status: 413, Reason: "PayloadTooLarge"}, dispatch.Fatal},
	}
	for _, tc := range tests {
		srv.Script(tokMsg, tc.answer)
		o := p.Send(context.Background(), push(t, payload.ChannelMessage, payload.TypeMessage))
		wantStatus := tc.answer.Status
		if o.Result != tc.want || o.Status != wantStatus || o.Reason != tc.answer.Reason {
			t.Errorf("%d %s: got %+v, want %v", tc.answer.Status, tc.answer.Reason, o, tc.want)
		}
	}
}

// Test410Timestamp checks the server's 410 body as the raw apns2 client
// reads it.
func Test410Timestamp(t *testing.T) {
	_, pemKey := p8(t)
	srv := apnstest.NewServer(apnstest.Options{})
	defer srv.Close()
	gone := time.UnixMilli(1700000000000)
	srv.Script(tokMsg, apnstest.Unregistered(gone))
	authKey, err := token.AuthKeyFromBytes(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	c := apns2.NewTokenClient(&token.Token{AuthKey: authKey, KeyID: "K", TeamID: "T"})
	c.Host, c.HTTPClient = srv.URL, srv.Client()
	resp, err := c.Push(&apns2.Notification{DeviceToken: tokMsg, Topic: "t", Payload: []byte(`{"aps":{}}`)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 410 || resp.Reason != apns2.ReasonUnregistered || !resp.Timestamp.Equal(gone) || resp.ApnsID == "" {
		t.Fatalf("410: %+v", resp)
	}
}

func TestTimeoutIsRetry(t *testing.T) {
	p, srv := newTokenProvider(t)
	srv.Script(tokMsg, apnstest.Answer{Delay: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	o := p.Send(ctx, push(t, payload.ChannelMessage, payload.TypeMessage))
	if o.Result != dispatch.Retry || !errors.Is(o.Err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %+v", o)
	}
	if strings.Contains(o.Err.Error(), tokMsg) {
		t.Fatalf("token in error text: %v", o.Err)
	}
}

func TestResetUsesFreshConnection(t *testing.T) {
	p, srv := newTokenProvider(t)
	ctx := context.Background()
	p.Send(ctx, push(t, payload.ChannelMessage, payload.TypeMessage))
	p.Send(ctx, push(t, payload.ChannelMessage, payload.TypeMessage))
	p.Reset()
	p.Send(ctx, push(t, payload.ChannelMessage, payload.TypeMessage))
	r := srv.Requests()
	if r[0].RemoteAddr != r[1].RemoteAddr || r[1].RemoteAddr == r[2].RemoteAddr {
		t.Fatalf("connections: %s %s %s", r[0].RemoteAddr, r[1].RemoteAddr, r[2].RemoteAddr)
	}
}

func TestCertificateAuth(t *testing.T) {
	cert, pool := clientCert(t)
	srv := apnstest.NewServer(apnstest.Options{ClientCAs: pool})
	defer srv.Close()
	cfg := apns.DefaultConfig()
	cfg.Endpoint, cfg.Topic, cfg.Auth, cfg.Certificate = srv.URL, "com.example.pushd", apns.AuthCertificate, &cert
	cfg.HTTP.RootCAs = rootsOf(srv)
	p, err := apns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if o := p.Send(context.Background(), push(t, payload.ChannelMessage, payload.TypeMessage)); o.Result != dispatch.Delivered {
		t.Fatalf("cert auth: %+v", o)
	}
	if r := srv.Requests(); r[0].Auth != "certificate" {
		t.Fatalf("auth = %q", r[0].Auth)
	}
}

func TestConfigValidation(t *testing.T) {
	_, pemKey := p8(t)
	base := apns.DefaultConfig()
	base.Topic, base.KeyID, base.TeamID = "t", "k", "team"
	for name, mod := range map[string]func(*apns.Config){
		"no key":       func(c *apns.Config) {},
		"bad key":      func(c *apns.Config) { c.KeyPEM = []byte("not pem") },
		"no topic":     func(c *apns.Config) { c.KeyPEM, c.Topic = pemKey, "" },
		"no key id":    func(c *apns.Config) { c.KeyPEM, c.KeyID = pemKey, "" },
		"no cert":      func(c *apns.Config) { c.Auth = apns.AuthCertificate },
		"unknown auth": func(c *apns.Config) { c.Auth = "password" },
	} {
		c := base
		mod(&c)
		if _, err := apns.New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func clientCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Apple Push Services: com.example.pushd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}, pool
}

// The tracking id goes out as apns-id only when Apple takes it: a
// lower-case UUID.
func TestNotificationApnsID(t *testing.T) {
	p, _ := newTokenProvider(t)
	for tid, want := range map[string]bool{
		"5f0c7b2e-8d1a-4c3b-9e6f-2a1b3c4d5e6f":  true,
		"5F0C7B2E-8D1A-4C3B-9E6F-2A1B3C4D5E6F":  false,
		"5f0c7b2e-8d1a-4c3b-9e6f-2a1b3c4d5e6":   false,
		"5f0c7b2e-8d1a-4c3b-9e6f-2a1b3c4d5e6fa": false,
		"5f0c7b2e08d1a-4c3b-9e6f-2a1b3c4d5e6f":  false,
		"5f0c7b2e-8d1a-4c3b-9e6g-2a1b3c4d5e6f":  false,
		"sip-call-1":                            false,
	} {
		pu := push(t, payload.ChannelMessage, payload.TypeMessage)
		pu.TrackingID = tid
		n, err := p.Notification(pu)
		if err != nil {
			t.Fatal(err)
		}
		if (n.ApnsID == tid) != want || (!want && n.ApnsID != "") {
			t.Errorf("tracking id %q → apns-id %q", tid, n.ApnsID)
		}
	}
}
