package sip

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientdigest "github.com/icholy/digest"

	"github.com/emiago/sipgo/sip"

	"pushd/component/dispatch"
	"pushd/internal/store"
)

// The tests of this package run a real Server on 127.0.0.1 and talk to it
// with raw SIP over UDP and TCP, so that they can send what no SIP stack
// would (S4). The SIP clock is a fakeClock: pushd's call timers (5 s,
// 13 s) move when a test says so and a Tick looks at them.

const testDomain = "pushd.test"

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// accounts holds passwords and answers with their HA1, as the store does.
type accounts map[string]string

func (a accounts) DigestHA1(username, algorithm string) ([]byte, error) {
	pw, ok := a[username]
	if !ok {
		return nil, store.ErrNoDigest
	}
	var h hash.Hash
	switch algorithm {
	case "MD5":
		h = md5.New()
	case "SHA-256":
		h = sha256.New()
	default:
		return nil, errors.New("no such algorithm")
	}
	io.WriteString(h, username+":"+testDomain+":"+pw)
	return h.Sum(nil), nil
}

// fakePusher takes every push; Done is never called, so a call push
// counts as on its way.
type fakePusher struct {
	mu   sync.Mutex
	jobs []dispatch.Job
	more chan struct{}
}

func newFakePusher() *fakePusher { return &fakePusher{more: make(chan struct{}, 1)} }

func (p *fakePusher) Submit(_ context.Context, job dispatch.Job) (string, error) {
	p.mu.Lock()
	p.jobs = append(p.jobs, job)
	n := len(p.jobs)
	p.mu.Unlock()
	select {
	case p.more <- struct{}{}:
	default:
	}
	return "tid-" + strconv.Itoa(n), nil
}

func (p *fakePusher) Jobs() []dispatch.Job {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]dispatch.Job(nil), p.jobs...)
}

// wait returns once n pushes came, or fails the test.
func (p *fakePusher) wait(t *testing.T, n int) []dispatch.Job {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if jobs := p.Jobs(); len(jobs) >= n {
			return jobs
		}
		select {
		case <-p.more:
		case <-deadline:
			t.Fatalf("%d pushes, want %d", len(p.Jobs()), n)
		}
	}
}

// world is a running Server with its fake clock, registrar and pusher.
type world struct {
	srv    *Server
	clock  *fakeClock
	reg    *Registrar
	pusher *fakePusher
	logs   *lockedBuffer
}

var testAccounts = accounts{"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}

// startWorld starts a Server on a free port; edit changes its Config
// first. The server stops when the test ends, and the test fails if it
// left goroutines behind.
func startWorld(t *testing.T, edit func(*Config)) *world {
	t.Helper()
	return startWorldPushing(t, edit, nil)
}

// startWorldPushing is startWorld with pushes going to pusher instead of
// the world's fake one (nil: the fake one).
func startWorldPushing(t *testing.T, edit func(*Config), pusher Pusher) *world {
	t.Helper()
	base := goroutines()
	w := &world{clock: newFakeClock(), pusher: newFakePusher(), logs: &lockedBuffer{}}
	var err error
	if w.reg, err = OpenRegistrar(nil); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Domain = testDomain
	cfg.Now = w.clock.Now
	cfg.Providers = []dispatch.ProviderName{dispatch.APNS, dispatch.FCM}
	cfg.Logger = slog.New(slog.NewTextHandler(w.logs, nil))
	if edit != nil {
		edit(&cfg)
	}
	// TCP listens on the port UDP got: another process may hold it.
	for try := 0; ; try++ {
		deps := Deps{Registrar: w.reg, Accounts: testAccounts, Pusher: w.pusher}
		if pusher != nil {
			deps.Pusher = pusher
		}
		w.srv, err = New(cfg, deps)
		if err != nil {
			t.Fatal(err)
		}
		err = w.srv.Listen()
		if err == nil {
			break
		}
		w.srv.Close()
		if try == 10 || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return")
		}
		settleGoroutines(t, base)
	})
	return w
}

// settleGoroutines waits for the goroutine count to come back to what it
// was (sockets and transactions closing take a moment), and fails the
// test if it does not.
func settleGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for goroutines() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("%d goroutines left, %d before the server:\n%s", goroutines(), base, buf)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// goroutines counts the goroutines but sipgo's readers of the UDP
// sockets it opens itself to reach a peer: under load sipgo 1.7.3
// sometimes keeps one past its transport's Close (its own leak, closed
// with the process); pushd's own goroutines all count.
func goroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.TrimSpace(g) != "" && !strings.Contains(g, "sipgo/sip.(*TransportUDP).readUDPConnection") {
			n++
		}
	}
	return n
}

// tick moves the SIP clock and has the server look at it.
func (w *world) tick(d time.Duration) {
	w.clock.Advance(d)
	w.srv.Tick()
}

func (w *world) addr() string { return w.srv.Addr("udp") }

// bind stores a binding for user straight in the registrar, as a REGISTER
// would have: push binding when push is set, else a live contact.
func (w *world) bind(t *testing.T, user, contact string, push *PushParams) Binding {
	t.Helper()
	now := w.clock.Now()
	b := Binding{AOR: aorOf(user, testDomain), ID: contact, Contact: contact, Transport: "udp", Push: push,
		CallID: "bind-" + contact, CSeq: 1, Expires: now.Add(time.Hour), Updated: now}
	if push != nil {
		b.Source = "127.0.0.1:9"
	}
	if _, err := w.reg.Apply(b.AOR, Update{Store: []Binding{b}}, now); err != nil {
		t.Fatal(err)
	}
	return b
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// peer is one raw SIP endpoint on its own socket: a caller, a phone or an
// attacker. What it reads is parsed by sipgo's parser; what it writes is
// text, as bad as a test wants.
type peer struct {
	t       *testing.T
	network string // "udp", "tcp" or "tls"
	conn    net.Conn
	udp     *net.UDPConn // a UDP peer hears anyone (pushd's branches too)
	local   string
	remote  string // the server's address
	in      chan sip.Message
	closed  chan struct{}
}

// dialPeer opens a peer to addr. A UDP peer is unconnected: it also hears
// pushd's INVITEs when a binding names it.
func dialPeer(t *testing.T, network, addr string) *peer {
	t.Helper()
	p := &peer{t: t, network: network, remote: addr, in: make(chan sip.Message, 256), closed: make(chan struct{})}
	switch network {
	case "udp":
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		dst, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		p.udp, p.local, p.conn = c, c.LocalAddr().String(), &udpTo{UDPConn: c, dst: dst}
		go p.readUDP()
	case "tcp", "tls":
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if network == "tls" {
			c = tls.Client(c, &tls.Config{InsecureSkipVerify: true}) // the test's own certificate
		}
		p.conn, p.local = c, c.LocalAddr().String()
		go p.readTCP()
	default:
		t.Fatalf("network %q", network)
	}
	t.Cleanup(p.close)
	return p
}

func (p *peer) close() {
	if p.udp != nil {
		_ = p.udp.Close()
	}
	if p.conn != nil {
		_ = p.conn.Close()
	}
	<-p.closed
}

func (p *peer) readUDP() {
	defer close(p.closed)
	buf := make([]byte, 1<<16)
	for {
		n, from, err := p.udp.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...)); err == nil {
			m.SetSource(from.String())
			p.deliver(m)
		}
	}
}

func (p *peer) readTCP() {
	defer close(p.closed)
	stream := sip.NewParser().NewSIPStream()
	defer stream.Close()
	buf := make([]byte, 1<<16)
	for {
		n, err := p.conn.Read(buf)
		if err != nil {
			return
		}
		if err := stream.ParseSIPStream(buf[:n], p.deliver); err != nil && !errors.Is(err, sip.ErrParseSipPartial) {
			return
		}
	}
}

func (p *peer) deliver(m sip.Message) {
	select {
	case p.in <- m:
	default: // a test that stopped reading
	}
}

// udpTo writes to a fixed destination from an unconnected socket.
type udpTo struct {
	*net.UDPConn
	dst *net.UDPAddr
}

func (u *udpTo) Write(b []byte) (int, error) { return u.WriteToUDP(b, u.dst) }

// send writes one message (or any bytes) to the server.
func (p *peer) send(raw string) {
	p.t.Helper()
	if _, err := p.conn.Write([]byte(raw)); err != nil {
		p.t.Fatalf("send: %v", err)
	}
}

// next returns the next message within d, or nil.
func (p *peer) next(d time.Duration) sip.Message {
	select {
	case m := <-p.in:
		return m
	case <-time.After(d):
		return nil
	}
}

// final waits for the final response to callID's request, ACKing an
// INVITE's non-2xx as RFC 3261 §17.1.1.3 wants; provisionals seen are
// returned too.
func (p *peer) final(t *testing.T, callID string, d time.Duration) (*sip.Response, []int) {
	t.Helper()
	var prov []int
	deadline := time.Now().Add(d)
	for {
		m := p.next(time.Until(deadline))
		if m == nil {
			return nil, prov
		}
		res, ok := m.(*sip.Response)
		if !ok || res.CallID() == nil || res.CallID().Value() != callID {
			continue
		}
		if res.StatusCode < 200 {
			prov = append(prov, res.StatusCode)
			continue
		}
		if res.CSeq().MethodName == sip.INVITE {
			p.send(ackFor(res))
		}
		return res, prov
	}
}

// expect sends req and returns the final response's code (0: none
// within a second).
func (p *peer) expect(t *testing.T, req message) int {
	t.Helper()
	p.send(req.String())
	res, _ := p.final(t, req.get("Call-ID"), time.Second)
	if res == nil {
		return 0
	}
	return int(res.StatusCode)
}

// message is a SIP request as text, header by header, so that a test can
// drop, repeat or spoil any of them.
type message struct {
	start   string
	headers [][2]string
	body    string
	// length: Content-Length is written from the body unless a test set it.
}

func (m message) get(name string) string {
	for _, h := range m.headers {
		if strings.EqualFold(h[0], name) {
			return h[1]
		}
	}
	return ""
}

// with sets a header (replacing every one of that name, in place).
func (m message) with(name, value string) message {
	out := m
	out.headers = nil
	done := false
	for _, h := range m.headers {
		if strings.EqualFold(h[0], name) {
			if !done {
				out.headers = append(out.headers, [2]string{name, value})
				done = true
			}
			continue
		}
		out.headers = append(out.headers, h)
	}
	if !done {
		out.headers = append(out.headers, [2]string{name, value})
	}
	return out
}

// add appends a header, even one already there.
func (m message) add(name, value string) message {
	out := m
	out.headers = append(append([][2]string(nil), m.headers...), [2]string{name, value})
	return out
}

func (m message) without(name string) message {
	out := m
	out.headers = nil
	for _, h := range m.headers {
		if !strings.EqualFold(h[0], name) {
			out.headers = append(out.headers, h)
		}
	}
	return out
}

func (m message) String() string {
	var b strings.Builder
	b.WriteString(m.start + "\r\n")
	for _, h := range m.headers {
		b.WriteString(h[0] + ": " + h[1] + "\r\n")
	}
	if m.get("Content-Length") == "" {
		b.WriteString("Content-Length: " + strconv.Itoa(len(m.body)) + "\r\n")
	}
	b.WriteString("\r\n" + m.body)
	return b.String()
}

func token() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// request is a well-formed request from this peer: fresh Call-ID,
// branch and tag.
func (p *peer) request(method, ruri, from, to string) message {
	id := token()
	return message{start: method + " " + ruri + " SIP/2.0", headers: [][2]string{
		{"Via", "SIP/2.0/" + strings.ToUpper(p.network) + " " + p.local + ";branch=z9hG4bK" + id + ";rport"},
		{"Max-Forwards", "70"},
		{"From", from + ";tag=" + id[:6]},
		{"To", to},
		{"Call-ID", id + "@test"},
		{"CSeq", "1 " + method},
		{"Contact", "<sip:" + strings.ToLower(method) + "@" + p.local + ";transport=" + p.network + ">"},
	}}
}

// invite is bob calling user.
func (p *peer) invite(user string) message {
	return p.request("INVITE", "sip:"+user+"@"+testDomain, `"Bob" <sip:bob@`+testDomain+`>`, "<sip:"+user+"@"+testDomain+">")
}

// register is user's REGISTER with one contact (its parameters in
// contact), no credentials yet.
func (p *peer) register(user, contact string) message {
	aor := "<sip:" + user + "@" + testDomain + ">"
	return p.request("REGISTER", "sip:"+testDomain, aor, aor).with("Contact", contact).with("Expires", "600")
}

// ackFor is the ACK of a non-2xx final response to an INVITE (§17.1.1.3):
// the INVITE's Via, From, Call-ID and CSeq number, the response's To.
func ackFor(res *sip.Response) string {
	m := message{start: "ACK " + res.To().Address.String() + " SIP/2.0", headers: [][2]string{
		{"Via", res.Via().Value()},
		{"Max-Forwards", "70"},
		{"From", res.From().Value()},
		{"To", res.To().Value()},
		{"Call-ID", res.CallID().Value()},
		{"CSeq", strconv.Itoa(int(res.CSeq().SeqNo)) + " ACK"},
	}}
	return m.String()
}

// authorize answers the challenge of a 401 or 407 for req: the same
// request with a fresh branch and the next CSeq, carrying credentials
// for user with password (the first challenge, as phones do).
func authorize(t *testing.T, req message, res *sip.Response, user, password string) message {
	t.Helper()
	header, reply := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		header, reply = "Proxy-Authenticate", "Proxy-Authorization"
	}
	h := res.GetHeader(header)
	if h == nil {
		t.Fatalf("%d without %s", res.StatusCode, header)
	}
	chal, err := clientdigest.ParseChallenge(h.Value())
	if err != nil {
		t.Fatal(err)
	}
	method, uri, _ := strings.Cut(req.start, " ")
	uri, _, _ = strings.Cut(uri, " ")
	creds, err := clientdigest.Digest(chal, clientdigest.Options{Method: method, URI: uri, Username: user, Password: password, Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	seq, _, _ := strings.Cut(req.get("CSeq"), " ")
	n, _ := strconv.Atoi(seq)
	via := req.get("Via")
	if i := strings.Index(via, ";branch="); i >= 0 {
		via = via[:i] + ";branch=z9hG4bK" + token() + ";rport"
	}
	return req.with("Via", via).with("CSeq", fmt.Sprintf("%d %s", n+1, method)).with(reply, creds.String())
}

// registerAs runs a REGISTER through its challenge and returns the final
// response to the authorized one.
func (p *peer) registerAs(t *testing.T, req message, user, password string) *sip.Response {
	t.Helper()
	p.send(req.String())
	res, _ := p.final(t, req.get("Call-ID"), 2*time.Second)
	if res == nil || res.StatusCode != 401 {
		t.Fatalf("REGISTER without credentials: %v", res)
	}
	auth := authorize(t, req, res, user, password)
	p.send(auth.String())
	res, _ = p.final(t, req.get("Call-ID"), 2*time.Second)
	if res == nil {
		t.Fatal("no answer to the authorized REGISTER")
	}
	return res
}

func loopback() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} }

// withTLS adds a TLS listener on a free port with a throwaway certificate.
func withTLS(t *testing.T) func(*Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: testDomain},
		DNSNames: []string{testDomain}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return func(c *Config) {
		c.TLSListen = "127.0.0.1:0"
		c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
