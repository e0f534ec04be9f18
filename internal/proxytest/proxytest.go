// Package proxytest is a small HTTP CONNECT proxy for tests of BEHAVIOUR
// P4: it requires Digest (RFC 7616, MD5, qop=auth) or Basic credentials,
// tunnels authorised CONNECTs to loopback targets, and counts what it saw.
//
// Test-only: it listens on 127.0.0.1 and dials whatever the CONNECT names.
package proxytest

import (
	"bufio"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Digest challenge parameters the proxy offers.
const (
	Realm  = "pushd-test"
	Nonce  = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
	Opaque = "5ccc069c403ebaf9f0171e9517f40e41"
)

// Proxy is a running CONNECT proxy.
type Proxy struct {
	ln         net.Listener
	user, pass string
	basic      bool
	// CloseAfter407 makes the proxy close the connection after asking for
	// credentials, as some proxies do; set it before the first request.
	CloseAfter407 bool
	// Connects counts CONNECT requests; Authorised those let through.
	Connects, Authorised atomic.Int32
	wg                   sync.WaitGroup
}

// Start runs a proxy requiring Digest auth with user and pass (Basic when
// basic is true); it stops when the test ends.
func Start(t testing.TB, user, pass string, basic bool) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, user: user, pass: pass, basic: basic}
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

// URL is the proxy's http:// URL.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *Proxy) accept() {
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

func (p *Proxy) ok(req *http.Request) bool {
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
	if f["username"] != p.user || f["nonce"] != Nonce || f["opaque"] != Opaque || f["uri"] != req.Host {
		return false
	}
	ha1 := md5hex(p.user + ":" + Realm + ":" + p.pass)
	ha2 := md5hex("CONNECT:" + f["uri"])
	return f["response"] == md5hex(ha1+":"+Nonce+":"+f["nc"]+":"+f["cnonce"]+":auth:"+ha2)
}

func (p *Proxy) handle(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != http.MethodConnect {
			return
		}
		p.Connects.Add(1)
		if !p.ok(req) {
			hdr := "Proxy-Authenticate: Basic realm=\"" + Realm + "\"\r\n"
			if !p.basic {
				hdr = `Proxy-Authenticate: Digest realm="` + Realm + `", qop="auth", nonce="` + Nonce + `", opaque="` + Opaque + `", algorithm=MD5` + "\r\n"
			}
			if p.CloseAfter407 {
				_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\n"+hdr+"Connection: close\r\nContent-Length: 0\r\n\r\n")
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\n"+hdr+"Content-Length: 0\r\n\r\n")
			continue
		}
		p.Authorised.Add(1)
		up, err := net.Dial("tcp", req.Host)
		if err != nil {
			_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		go func() { _, _ = io.Copy(up, br); up.Close() }()
		_, _ = io.Copy(c, up)
		up.Close()
		return
	}
}
