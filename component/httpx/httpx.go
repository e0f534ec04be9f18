// Package httpx builds the outbound HTTP/2 transports of the push providers
// (component/apns, component/fcm) and owns BEHAVIOUR P4's networking:
//   - an HTTP or HTTPS proxy reached with CONNECT, authenticated with Basic
//     or Digest (RFC 7616; the standard library only does Basic, so the
//     CONNECT exchange is ours);
//   - a host name with several addresses is tried address by address, each
//     with its own connect timeout (2 s by default) — net.Dialer would split
//     one timeout across them instead;
//   - Rotate moves the next dial past the address in use, so a push that got
//     no answer (the per-attempt timeout lives in component/dispatch) is
//     retried on the next address over a fresh connection.
//
// It must never log, never read configuration files other than the CA file
// it is given, and never keep a connection open itself: connection pooling
// belongs to the http.Transport it returns.
package httpx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Proxy is an outbound proxy. Auth is "" (none), "basic" or "digest".
type Proxy struct {
	URL      string // http://host:port or https://host:port
	Auth     string
	User     string
	Password string
	// RootCAs verifies an https proxy's certificate (nil: system roots).
	RootCAs *x509.CertPool
}

// Config is everything a provider transport needs. Fill it from
// DefaultConfig.
type Config struct {
	// Proxy, when non-nil, carries every connection through CONNECT.
	Proxy *Proxy
	// RootCAs verifies the provider's certificate (nil: system roots). Use
	// CertPoolWithFile to add an extra CA to the system roots.
	RootCAs *x509.CertPool
	// Certificates are TLS client certificates (APNS certificate auth).
	Certificates []tls.Certificate
	// ConnectTimeout bounds each address's TCP connect. Default 2 s (P4).
	ConnectTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake. Default 10 s.
	TLSHandshakeTimeout time.Duration
	// PingTimeout: an HTTP/2 connection silent this long is pinged and closed
	// if the ping is not answered, so a dead link is not reused. Default 15 s.
	PingTimeout time.Duration
	// LookupHost resolves a host name; default net.DefaultResolver. Tests
	// inject a fixed list of addresses.
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// DialAddr dials one resolved address; default net.Dialer. Tests inject
	// an address that never answers.
	DialAddr func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DefaultConfig returns the P4 defaults: no proxy, system roots, 2 s per
// address.
func DefaultConfig() Config {
	return Config{
		ConnectTimeout:      2 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		PingTimeout:         15 * time.Second,
	}
}

// ErrProxyAuth: the proxy refused the credentials (or none were configured).
var ErrProxyAuth = errors.New("httpx: proxy authentication failed")

// CertPoolWithFile returns the system roots plus the PEM certificates in
// file: the "extra CA" of the [apns] / [fcm] configuration.
func CertPoolWithFile(file string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("httpx: ca file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("httpx: ca file %s: no PEM certificate", file)
	}
	return pool, nil
}

// Factory makes transports that share one Dialer, so Rotate affects the
// next transport's dials.
type Factory struct {
	cfg    Config
	dialer *Dialer
}

// NewFactory validates cfg.
func NewFactory(cfg Config) (*Factory, error) {
	d, err := NewDialer(cfg)
	if err != nil {
		return nil, err
	}
	return &Factory{cfg: d.cfg, dialer: d}, nil
}

// Dialer returns the shared dialer.
func (f *Factory) Dialer() *Dialer { return f.dialer }

// Transport returns a new HTTP/2-only transport (APNS refuses HTTP/1.1; FCM
// takes either). Each call has its own connection pool: that is how a
// provider gets a fresh connection for a retry.
func (f *Factory) Transport() *http.Transport {
	t := &http.Transport{
		DialContext: f.dialer.DialContext,
		TLSClientConfig: &tls.Config{
			RootCAs:      f.cfg.RootCAs,
			Certificates: f.cfg.Certificates,
			MinVersion:   tls.VersionTLS12,
		},
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: f.cfg.TLSHandshakeTimeout,
		IdleConnTimeout:     90 * time.Second,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: f.cfg.PingTimeout, PingTimeout: f.cfg.PingTimeout},
	}
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP2(true)
	return t
}

// Dialer dials provider hosts, directly or through the proxy, address by
// address.
type Dialer struct {
	cfg   Config
	proxy *url.URL

	mu  sync.Mutex
	cur map[string]int // host → index of the address to try first
}

// NewDialer validates cfg and fills its defaults.
func NewDialer(cfg Config) (*Dialer, error) {
	def := DefaultConfig()
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = def.ConnectTimeout
	}
	if cfg.TLSHandshakeTimeout <= 0 {
		cfg.TLSHandshakeTimeout = def.TLSHandshakeTimeout
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = def.PingTimeout
	}
	if cfg.LookupHost == nil {
		cfg.LookupHost = net.DefaultResolver.LookupHost
	}
	if cfg.DialAddr == nil {
		var nd net.Dialer
		cfg.DialAddr = nd.DialContext
	}
	d := &Dialer{cfg: cfg, cur: map[string]int{}}
	if cfg.Proxy != nil {
		u, err := url.Parse(cfg.Proxy.URL)
		if err != nil {
			return nil, fmt.Errorf("httpx: proxy url: %w", err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("httpx: proxy scheme %q: want http or https", u.Scheme)
		}
		if u.Port() == "" {
			port := "80"
			if u.Scheme == "https" {
				port = "443"
			}
			u.Host = net.JoinHostPort(u.Hostname(), port)
		}
		switch strings.ToLower(cfg.Proxy.Auth) {
		case "", "none", "basic", "digest":
		default:
			return nil, fmt.Errorf("httpx: proxy auth %q: want basic or digest", cfg.Proxy.Auth)
		}
		d.proxy = u
	}
	return d, nil
}

// Rotate makes the next dial of every host start at the address after the
// one in use.
func (d *Dialer) Rotate() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for h := range d.cur {
		d.cur[h]++
	}
}

// DialContext dials addr ("host:port"), through the proxy when configured.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.proxy == nil {
		return d.dialEach(ctx, network, addr)
	}
	conn, err := d.dialEach(ctx, network, d.proxy.Host)
	if err != nil {
		return nil, fmt.Errorf("httpx: proxy %s: %w", d.proxy.Host, err)
	}
	if d.proxy.Scheme == "https" {
		tc := tls.Client(conn, &tls.Config{ServerName: d.proxy.Hostname(), RootCAs: d.cfg.Proxy.RootCAs, MinVersion: tls.VersionTLS12})
		hctx, cancel := context.WithTimeout(ctx, d.cfg.TLSHandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("httpx: proxy tls: %w", err)
		}
		conn = tc
	}
	tunnel, err := d.connect(ctx, conn, addr)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return tunnel, nil
}

// dialEach resolves host and tries its addresses one after the other, each
// with ConnectTimeout, starting at the current one for that host.
func (d *Dialer) dialEach(ctx context.Context, network, hostport string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("httpx: address %q: %w", hostport, err)
	}
	addrs := []string{host}
	if net.ParseIP(host) == nil {
		addrs, err = d.cfg.LookupHost(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("httpx: resolve %s: %w", host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("httpx: resolve %s: no address", host)
		}
	}
	d.mu.Lock()
	start := d.cur[host]
	d.mu.Unlock()
	var errs []error
	for i := range addrs {
		idx := (start + i) % len(addrs)
		actx, cancel := context.WithTimeout(ctx, d.cfg.ConnectTimeout)
		conn, err := d.cfg.DialAddr(actx, network, net.JoinHostPort(addrs[idx], port))
		cancel()
		if err == nil {
			d.mu.Lock()
			d.cur[host] = idx
			d.mu.Unlock()
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("httpx: dial %s: %w", hostport, errors.Join(errs...))
}
