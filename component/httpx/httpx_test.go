package httpx_test

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sideshow/apns2"

	"pushd/component/httpx"
	"pushd/internal/apnstest"
)

// proxy is a small CONNECT proxy requiring Digest (or Basic) auth.
type proxy struct {
	ln              net.Listener
	user, pass      string
	basic           bool
	closeAfter407   bool
	connects, authd atomic.Int32
	wg              sync.WaitGroup
}

const realm, nonce, opaque = "pushd-test", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "5ccc069c403ebaf9f0171e9517f40e41"

func newProxy(t *testing.T, user, pass string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, user: user, pass: pass}
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *proxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.handle(c) }()
	}
}

func md5hex(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }

func (p *proxy) ok(req *http.Request) bool {
	auth := req.Header.Get("Proxy-Authorization")
	if p.basic {
		return auth == "Basic "+base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.pass))
	}
	rest, ok := strings.CutPrefix(auth, "Digest ")
	if !ok {
		return false
	}
	f := map[string]string{}
	for _, kv := range strings.Split(rest, ", ") {
		k, v, _ := strings.Cut(kv, "=")
		f[k] = strings.Trim(v, `"`)
	}
	if f["username"] != p.user || f["nonce"] != nonce || f["opaque"] != opaque || f["uri"] != req.Host {
		return false
	}
	ha1 := md5hex(p.user + ":" + realm + ":" + p.pass)
	ha2 := md5hex("CONNECT:" + f["uri"])
	return f["response"] == md5hex(ha1+":"+nonce+":"+f["nc"]+":"+f["cnonce"]+":auth:"+ha2)
}

func (p *proxy) handle(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != http.MethodConnect {
			return
		}
		p.connects.Add(1)
		if !p.ok(req) {
			hdr := "Proxy-Authenticate: Basic realm=\"" + realm + "\"\r\n"
			if !p.basic {
				hdr = `Proxy-Authenticate: Digest realm="` + realm + `", qop="auth", nonce="` + nonce + `", opaque="` + opaque + `", algorithm=MD5` + "\r\n"
			}
			conn := ""
			if p.closeAfter407 {
				conn = "Connection: close\r\n"
			}
			io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\n"+hdr+conn+"Content-Length: 0\r\n\r\n")
			if p.closeAfter407 {
				return
			}
			continue
		}
		p.authd.Add(1)
		up, err := net.Dial("tcp", req.Host)
		if err != nil {
			io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		go func() { io.Copy(up, br); up.Close() }()
		io.Copy(c, up)
		return
	}
}

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
		p := newProxy(t, "alice", "s3cret")
		p.closeAfter407 = closeAfter
		// No provider auth here: the server answers 403, which proves the
		// request went through the tunnel.
		resp, err := pushThrough(t, srv, httpx.Config{Proxy: &httpx.Proxy{URL: p.url(), Auth: "digest", User: "alice", Password: "s3cret"}})
		if err != nil {
			t.Fatalf("closeAfter407=%v: push through digest proxy: %v", closeAfter, err)
		}
		if len(srv.Requests()) != 1 || resp.StatusCode == 0 {
			t.Fatalf("server saw %d requests, status %d", len(srv.Requests()), resp.StatusCode)
		}
		if p.connects.Load() != 2 || p.authd.Load() != 1 {
			t.Fatalf("connects=%d authenticated=%d, want 2 and 1", p.connects.Load(), p.authd.Load())
		}
	}
}

func TestProxyWrongCredentials(t *testing.T) {
	srv := apnstest.NewServer(apnstest.Options{})
	defer srv.Close()
	p := newProxy(t, "alice", "s3cret")
	for _, auth := range []string{"digest", "basic", ""} {
		_, err := pushThrough(t, srv, httpx.Config{Proxy: &httpx.Proxy{URL: p.url(), Auth: auth, User: "alice", Password: "wrong"}})
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
	p := newProxy(t, "bob", "pw")
	p.basic = true
	if _, err := pushThrough(t, srv, httpx.Config{Proxy: &httpx.Proxy{URL: p.url(), Auth: "basic", User: "bob", Password: "pw"}}); err != nil {
		t.Fatal(err)
	}
	if p.authd.Load() != 1 || len(srv.Requests()) != 1 {
		t.Fatalf("authd=%d requests=%d", p.authd.Load(), len(srv.Requests()))
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
