package httpx_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sideshow/apns2"

	"pushd/component/httpx"
	"pushd/internal/apnstest"
	"pushd/internal/proxytest"
)

func pushThrough(t *testing.T, srv *apnstest.Server, cfg httpx.Config) (*apns2.Response, error) {
	t.Helper()
	cfg.RootCAs = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	f, err := httpx.NewFactory(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := f.Transport()
	defer tr.CloseIdleConnections()
	c := &apns2.Client{Host: srv.URL, HTTPClient: &http.Client{Transport: tr}, Certificate: srv.TLS.Certificates[0]}
	c.Token = nil
	n := &apns2.Notification{DeviceToken: "aabbccddeeff00112233", Topic: "com.example.app", Payload: []byte(`{"aps":{}}`)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.PushWithContext(ctx, n)
}

func TestProxyDigest(t *testing.T) {
	for _, closeAfter := range []bool{false, true} {
		srv := apnstest.NewServer(apnstest.Options{})
		defer srv.Close()
		p := proxytest.Start(t, "alice", "s3cret", false)
		p.CloseAfter407 = closeAfter
		// No provider auth here: the server answers 403, which proves the
		// request went through the tunnel.
		resp, err := pushThrough(t, srv, httpx.Config{Proxy: &httpx.Proxy{URL: p.URL(), Auth: "digest", User: "alice", Password: "s3cret"}})
		if err != nil {
			t.Fatalf("closeAfter407=%v: push through digest proxy: %v", closeAfter, err)
		}
		if len(srv.Requests()) != 1 || resp.StatusCode == 0 {
			t.Fatalf("server saw %d requests, status %d", len(srv.Requests()), resp.StatusCode)
		}
		if p.Connects.Load() != 2 || p.Authorised.Load() != 1 {
			t.Fatalf("connects=%d authenticated=%d, want 2 and 1", p.Connects.Load(), p.Authorised.Load())
		}
	}
}

func TestProxyWrongCredentials(t *testing.T) {
	srv := apnstest.NewServer(apnstest.Options{})
	defer srv.Close()
	p := proxytest.Start(t, "alice", "s3cret", false)
	for _, auth := range []string{"digest", "basic", ""} {
		_, err := pushThrough(t, srv, httpx.Config{Proxy: &httpx.Proxy{URL: p.URL(), Auth: auth, User: "alice", Password: "wrong"}})
		if !errors.Is(err, httpx.ErrProxyAuth) {
			t.Fatalf("auth %q: err = %v, want ErrProxyAuth", auth, err)
		}
		if !strings.Contains(err.Error(), "proxy authentication failed") {
			t.Fatalf("unclear error: %v", err)
		}
	}
	if len(srv.Requests()) != 0 {
		t.Fatal("request reached the server with wrong proxy credentials")
	}
}

func TestProxyBasic(t *testing.T) {
	srv := apnstest.NewServer(apnstest.Options{})
	defer srv.Close()
	p := proxytest.Start(t, "bob", "pw", true)
	if _, err := pushThrough(t, srv, httpx.Config{Proxy: &httpx.Proxy{URL: p.URL(), Auth: "basic", User: "bob", Password: "pw"}}); err != nil {
		t.Fatal(err)
	}
	if p.Authorised.Load() != 1 || len(srv.Requests()) != 1 {
		t.Fatalf("authd=%d requests=%d", p.Authorised.Load(), len(srv.Requests()))
	}
}

// TestAddressByAddress: a host with a dead first address is reached on the
// second after ConnectTimeout; Rotate makes the next dial start elsewhere.
func TestAddressByAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	var mu sync.Mutex
	var dialed []string
	cfg := httpx.Config{
		ConnectTimeout: 30 * time.Millisecond,
		LookupHost: func(context.Context, string) ([]string, error) {
			return []string{"192.0.2.1", "127.0.0.1"}, nil
		},
		DialAddr: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialed = append(dialed, addr)
			mu.Unlock()
			if strings.HasPrefix(addr, "192.0.2.1:") { // never answers
				<-ctx.Done()
				return nil, ctx.Err()
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	d, err := httpx.NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dial := func() {
		t.Helper()
		c, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort("api.push.example", port))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	dial() // dead, then live
	dial() // live first: the live address is remembered
	d.Rotate()
	dial() // rotated past the live one: dead, then live
	want := []string{"192.0.2.1", "127.0.0.1", "127.0.0.1", "192.0.2.1", "127.0.0.1"}
	if len(dialed) != len(want) {
		t.Fatalf("dialed %v", dialed)
	}
	for i, w := range want {
		if !strings.HasPrefix(dialed[i], w+":") {
			t.Fatalf("dial %d = %s, want %s (all %v)", i, dialed[i], w, dialed)
		}
	}
	if _, err := httpx.NewDialer(httpx.Config{Proxy: &httpx.Proxy{URL: "socks5://x:1"}}); err == nil {
		t.Fatal("socks5 proxy accepted")
	}
}
