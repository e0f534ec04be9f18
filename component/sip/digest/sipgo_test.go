package digest

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// registrar is a sipgo server whose REGISTER handler authenticates the way
// component/sip is to: limiter, then challenge or verify.
type registrar struct {
	digest  *Server
	limiter *Limiter
	ha1     HA1Func
	offer   []Algorithm // challenged with, in this order
	addr    string
}

func startRegistrar(t *testing.T, r *registrar) {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("pushd-test"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	srv.OnRegister(r.onRegister)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	go func() { _ = srv.ServeTCP(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = ua.Close()
	})
}

func (r *registrar) challenge(req *sip.Request, tx sip.ServerTransaction, stale bool) {
	res := sip.NewResponseFromRequest(req, sip.StatusUnauthorized, "Unauthorized", nil)
	for _, alg := range r.offer {
		res.AppendHeader(sip.NewHeader("WWW-Authenticate", r.digest.Challenge(alg, stale)))
	}
	_ = tx.Respond(res)
}

func (r *registrar) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	h := req.GetHeader("Authorization")
	if h == nil {
		r.challenge(req, tx, false)
		return
	}
	creds, err := Parse(h.Value())
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Bad Authorization", nil))
		return
	}
	src, _ := netip.ParseAddrPort(req.Source())
	if ok, _ := r.limiter.Allow(src.Addr(), creds.Username); !ok {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusForbidden, "Too Many Failures", nil))
		return
	}
	switch res := r.digest.Verify(Request{Method: req.Method.String(), URI: req.Recipient.String()}, creds, r.ha1); res.Outcome {
	case Accepted:
		r.limiter.Succeeded(src.Addr(), creds.Username)
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	case Stale:
		r.challenge(req, tx, true)
	default:
		r.limiter.Failed(src.Addr(), creds.Username)
		r.challenge(req, tx, false)
	}
}

// register runs sipgo's client: REGISTER, and on a 401 its DigestAuth.
func register(t *testing.T, addr, user, password string) int {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("phone"))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	// The Request-URI carries a parameter; sipgo's digest uri leaves it
	// out (sameResource).
	recipient := sip.Uri{Host: host, Port: p, UriParams: sip.NewParams()}
	recipient.UriParams.Add("transport", "tcp")
	req := sip.NewRequest(sip.REGISTER, recipient)
	req.SetTransport("TCP")
	req.AppendHeader(sip.NewHeader("Contact", "<sip:"+user+"@127.0.0.1>"))
	to := &sip.ToHeader{Address: sip.Uri{User: user, Host: testRealm}}
	req.AppendHeader(to)
	req.AppendHeader(&sip.FromHeader{Address: to.Address, Params: sip.NewParams()})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := client.Do(ctx, req, sipgo.ClientRequestRegisterBuild)
	if err != nil {
		t.Fatalf("REGISTER: %v", err)
	}
	if res.StatusCode != sip.StatusUnauthorized {
		t.Fatalf("REGISTER without credentials: %d", res.StatusCode)
	}
	res, err = client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: user, Password: password})
	if err != nil {
		t.Fatalf("REGISTER with credentials: %v", err)
	}
	return int(res.StatusCode)
}

// sipgo's client (github.com/icholy/digest underneath) registers with the
// challenges as sent, answering the first: SHA-256, or MD5 when offered
// first; a wrong password is refused and, five times over, blocked.
func TestSipgoRegisters(t *testing.T) {
	clk := newClock()
	for _, offer := range [][]Algorithm{Offered, {MD5, SHA256}} {
		t.Run(offer[0].String(), func(t *testing.T) {
			r := &registrar{digest: newTestServer(t, clk, nil), limiter: newTestLimiter(clk, nil), ha1: alice, offer: offer}
			var (
				mu   sync.Mutex
				used []Algorithm
			)
			ha1 := r.ha1
			r.ha1 = func(u string, alg Algorithm) ([]byte, error) {
				mu.Lock()
				used = append(used, alg)
				mu.Unlock()
				return ha1(u, alg)
			}
			startRegistrar(t, r)
			if got := register(t, r.addr, "alice", "alice-pw"); got != sip.StatusOK {
				t.Fatalf("right password: %d", got)
			}
			mu.Lock()
			if len(used) != 1 || used[0] != offer[0] {
				t.Errorf("client answered with %v, offered %v", used, offer)
			}
			mu.Unlock()
			for i := range 5 {
				if got := register(t, r.addr, "alice", "wrong"); got != sip.StatusUnauthorized {
					t.Fatalf("wrong password, try %d: %d", i, got)
				}
			}
			if got := register(t, r.addr, "alice", "alice-pw"); got != sip.StatusForbidden {
				t.Fatalf("after five failures: %d", got)
			}
			clk.Advance(time.Minute)
			if got := register(t, r.addr, "alice", "alice-pw"); got != sip.StatusOK {
				t.Fatalf("after the block: %d", got)
			}
		})
	}
}
