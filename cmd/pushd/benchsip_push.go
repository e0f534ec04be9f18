package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"pushd/component/payload"
	"pushd/internal/apnstest"
	"pushd/internal/bench"
)

// benchSIPPush is the push part's outcome. Pushed counts calls whose call
// push arrived; the counts below it are what the test checks: every call
// pushed exactly once, ended with one 487 and one missed-call push.
type benchSIPPush struct {
	Calls, Pushed         int
	CallPushes, Twice     int
	EndPushes, Terminated int
	Failed                int
	Elapsed               time.Duration // first INVITE → last call push
	P50, P99, Max         time.Duration
	// Cores and BenchCores are pushd's and the bench process's CPU while
	// the calls ran (until the last one ended).
	Cores, BenchCores float64
	// HeapGrowth is pushd's live heap and stacks after the calls, less
	// before (admin /api/memory: after a collection).
	HeapGrowth int64
}

func (p benchSIPPush) rate() float64 { return float64(p.Pushed) / p.Elapsed.Seconds() }

// benchSIPPushPart registers the phones, then drives the calls.
func benchSIPPushPart(ctx context.Context, sipAddr string, pid int, phones []benchSIPPhone, apns *benchAPNS, o benchSIPOptions) (benchSIPPush, error) {
	pn := func(i int) string {
		// PushKit (.voip): the call push goes on the VoIP channel (C2).
		return ";pn-provider=apns;pn-prid=" + phones[i].PRID + ";pn-param=" + apnsTeamID + "." + apnsTopic + ".voip"
	}
	users := make([]string, len(phones))
	for i, ph := range phones {
		users[i] = ph.User
	}
	// Asleep phones: pushd never sends them anything the bench would
	// answer, so their contact is a port nobody listens on.
	if err := registerSIPPhones(ctx, sipAddr, users, "127.0.0.1:9", pn); err != nil {
		return benchSIPPush{}, err
	}
	u, err := newSIPCaller(sipAddr, o.Calls, func(i int) string { return phones[i%len(phones)].User })
	if err != nil {
		return benchSIPPush{}, err
	}
	defer u.close()
	apns.onRequest(func(q apnstest.Request) { u.pushed(apns.key, q) })
	defer apns.onRequest(nil)
	cpu0, _ := bench.ProcessCPU(pid)
	self, start := bench.SelfCPU(), time.Now()
	res, err := u.run(ctx, o.Rate, o.Window)
	wall := time.Since(start)
	res.Cores = cores(pid, cpu0, wall)
	res.BenchCores = (bench.SelfCPU() - self).Seconds() / wall.Seconds()
	return res, err
}

// registerSIPPhones registers each user's phone (digest, UDP) with its
// contact at contact plus params(i), 32 at a time.
func registerSIPPhones(ctx context.Context, addr string, users []string, contact string, params func(i int) string) error {
	// sipgo's warnings about its own UDP bookkeeping are not the bench's.
	quiet := slog.New(slog.DiscardHandler)
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("pushd-bench"), sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)))
	if err != nil {
		return err
	}
	defer ua.Close()
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(quiet))
	if err != nil {
		return err
	}
	defer client.Close()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	p, _ := strconv.Atoi(port)
	var next atomic.Int64
	errs := make(chan error, 32)
	for range 32 {
		go func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(users) {
					errs <- nil
					return
				}
				if err := registerSIPPhone(ctx, client, host, p, users[i], "<sip:"+users[i]+"@"+contact+params(i)+">"); err != nil {
					errs <- fmt.Errorf("REGISTER %s: %w", users[i], err)
					return
				}
			}
		}()
	}
	var first error
	for range 32 {
		first = cmpErr(first, <-errs)
	}
	return first
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func registerSIPPhone(ctx context.Context, client *sipgo.Client, host string, port int, user, contact string) error {
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Host: host, Port: port})
	req.SetTransport("UDP")
	req.AppendHeader(sip.NewHeader("Contact", contact))
	req.AppendHeader(sip.NewHeader("Expires", "3600"))
	to := &sip.ToHeader{Address: sip.Uri{User: user, Host: "localhost"}}
	req.AppendHeader(to)
	req.AppendHeader(&sip.FromHeader{Address: to.Address, Params: sip.NewParams()})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := client.Do(ctx, req, sipgo.ClientRequestRegisterBuild)
	if err != nil {
		return err
	}
	if res.StatusCode == sip.StatusUnauthorized {
		if res, err = client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: user, Password: benchPassword}); err != nil {
			return err
		}
	}
	if res.StatusCode != sip.StatusOK {
		return fmt.Errorf("%d %s", res.StatusCode, res.Reason)
	}
	return nil
}

// sipCaller is the push part's load generator: a trunk on one UDP socket
// that writes its INVITEs, CANCELs and ACKs by hand, so that the bench's
// own SIP stack costs next to nothing on the shared cores. It retransmits
// (RFC 3261 Timer A, 500 ms doubling) until it hears an answer.
type sipCaller struct {
	conn   *net.UDPConn
	target *net.UDPAddr
	local  string
	callee func(i int) string
	calls  []sipBenchCall

	inflight chan struct{} // a slot per call in flight (the window)
	low      atomic.Int64  // calls below it have ended: retransmit skips them
	sent     atomic.Int64  // calls whose INVITE went

	mu    sync.Mutex
	first time.Time
	last  time.Time // the latest call push
	done  chan struct{}
	left  int // calls not yet ended (487 and missed-call push)
}

type sipBenchCall struct {
	mu         sync.Mutex
	sent       time.Time // the first INVITE
	lastSend   time.Time
	sends      int
	answered   bool // any response to the INVITE
	cancelling bool
	cancelled  bool // the CANCEL's 200 came
	pushedAt   time.Time
	callPushes int
	endPushes  int
	terminated bool // 487 came (and was ACKed)
	ended      bool
	failed     bool
	slot       bool // holds a window slot
}

func newSIPCaller(target string, calls int, callee func(i int) string) (*sipCaller, error) {
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	_ = conn.SetReadBuffer(8 << 20)
	_ = conn.SetWriteBuffer(8 << 20)
	u := &sipCaller{conn: conn, target: ta, local: conn.LocalAddr().String(), callee: callee,
		calls: make([]sipBenchCall, calls), done: make(chan struct{}), left: calls}
	go u.read()
	return u, nil
}

func (u *sipCaller) close() { _ = u.conn.Close() }

func (u *sipCaller) callID(i int) string { return "bsip-" + strconv.Itoa(i) + "@127.0.0.1" }

// index is the call number of a Call-ID of ours; -1 if it is none.
func (u *sipCaller) index(callID string) int {
	s, ok := strings.CutPrefix(callID, "bsip-")
	if !ok {
		return -1
	}
	s, _, _ = strings.Cut(s, "@")
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 || i >= len(u.calls) {
		return -1
	}
	return i
}

const benchSDP = "v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

// request writes one of a call's requests: INVITE, CANCEL, or the ACK of
// its 487 (toTag set).
func (u *sipCaller) request(i int, method, toTag string) {
	callee := u.callee(i)
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s sip:%s@localhost SIP/2.0\r\n", method, callee)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=z9hG4bK-bsip-%d;rport\r\n", u.local, i)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: \"Bench Caller\" <sip:caller@localhost>;tag=bc%d\r\n", i)
	fmt.Fprintf(&b, "To: <sip:%s@localhost>", callee)
	if toTag != "" {
		b.WriteString(";tag=" + toTag)
	}
	b.WriteString("\r\nCall-ID: " + u.callID(i) + "\r\n")
	cseqMethod := method
	fmt.Fprintf(&b, "CSeq: 1 %s\r\n", cseqMethod)
	if method == "INVITE" {
		fmt.Fprintf(&b, "Contact: <sip:caller@%s>\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", u.local, len(benchSDP), benchSDP)
	} else {
		b.WriteString("Content-Length: 0\r\n\r\n")
	}
	_, _ = u.conn.WriteToUDP(b.Bytes(), u.target)
}

// run sends the calls at rate (0: as fast as the window allows), at most
// window in flight, and waits until every call ended or failed.
func (u *sipCaller) run(ctx context.Context, rate float64, window int) (benchSIPPush, error) {
	stopRetrans := make(chan struct{})
	defer close(stopRetrans)
	go u.retransmit(stopRetrans)
	u.inflight = make(chan struct{}, window)
	start := time.Now()
	u.mu.Lock()
	u.first = start
	u.mu.Unlock()
	for i := range u.calls {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		select {
		case u.inflight <- struct{}{}:
		case <-ctx.Done():
			return benchSIPPush{}, ctx.Err()
		}
		c := &u.calls[i]
		c.mu.Lock()
		c.sent = time.Now()
		c.lastSend, c.sends, c.slot = c.sent, 1, true
		c.mu.Unlock()
		u.sent.Store(int64(i + 1))
		u.request(i, "INVITE", "")
	}
	select {
	case <-u.done:
	case <-time.After(time.Minute):
	case <-ctx.Done():
		return benchSIPPush{}, ctx.Err()
	}
	return u.result(), nil
}

// release frees the call's window slot: it was pushed, or failed. Called
// with c.mu held.
func (u *sipCaller) release(c *sipBenchCall) {
	if c.slot {
		c.slot = false
		<-u.inflight
	}
}

// retransmit resends INVITEs nobody answered and CANCELs nobody
// confirmed, 500 ms doubling, and gives a call up after seven sends.
func (u *sipCaller) retransmit(stop chan struct{}) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Now()
		low, sent := int(u.low.Load()), int(u.sent.Load())
		for i := low; i < sent; i++ {
			c := &u.calls[i]
			c.mu.Lock()
			if c.ended && i == low {
				low++
				u.low.Store(int64(low))
			}
			method := ""
			switch {
			case c.sends == 0 || c.ended || c.failed:
			case c.cancelling && !c.cancelled && !c.terminated:
				method = "CANCEL"
			case !c.cancelling && !c.answered:
				method = "INVITE"
			}
			due := method != "" && now.Sub(c.lastSend) >= (500*time.Millisecond)<<min(c.sends-1, 3)
			if due && c.sends >= 7 {
				c.failed, due = true, false
				u.end(c)
			}
			if due {
				c.lastSend = now
				c.sends++
			}
			c.mu.Unlock()
			if due {
				u.request(i, method, "")
			}
		}
	}
}

// read takes pushd's responses: a 487 ends the INVITE (ACKed), the rest
// only say the call is alive.
func (u *sipCaller) read() {
	buf := make([]byte, 65536)
	for {
		n, _, err := u.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		code, callID, method, toTag, ok := parseSIPResponse(buf[:n])
		if !ok {
			continue
		}
		i := u.index(callID)
		if i < 0 {
			continue
		}
		c := &u.calls[i]
		c.mu.Lock()
		ack := false
		switch method {
		case "INVITE":
			c.answered = true
			if code >= 200 {
				// A final answer other than 487 (pushd gave up, or
				// refused): the call failed.
				ack = true
				if code == 487 {
					c.terminated = true
				} else if !c.failed {
					c.failed = true
				}
				c.cancelled = true
				u.end(c)
			}
		case "CANCEL":
			c.cancelled = true
		}
		c.mu.Unlock()
		if ack {
			u.request(i, "ACK", toTag)
		}
	}
}

// pushed is the APNS server's hook: it opens each push to find its call.
func (u *sipCaller) pushed(key [payload.KeySize]byte, q apnstest.Request) {
	now := time.Now()
	var b struct {
		Enc string `json:"enc"`
	}
	if json.Unmarshal(q.Body, &b) != nil {
		return
	}
	p, err := payload.Open(key, b.Enc)
	if err != nil {
		return
	}
	i := u.index(p.CallID)
	if i < 0 {
		return
	}
	c := &u.calls[i]
	c.mu.Lock()
	cancel := false
	switch p.Type {
	case payload.TypeCall:
		c.callPushes++
		if c.pushedAt.IsZero() {
			c.pushedAt = now
			u.mu.Lock()
			if now.After(u.last) {
				u.last = now
			}
			u.mu.Unlock()
		}
		u.release(c)
		if !c.cancelling && !c.ended {
			c.cancelling, cancel = true, true
			c.lastSend, c.sends = now, 1
		}
	case payload.TypeMissedCall:
		c.endPushes++
		u.end(c)
	}
	c.mu.Unlock()
	if cancel {
		u.request(i, "CANCEL", "")
	}
}

// end marks a call ended once it has both its 487 and its missed-call
// push, or failed; called with c.mu held.
func (u *sipCaller) end(c *sipBenchCall) {
	if c.failed {
		u.release(c)
	}
	if c.ended || !(c.failed || c.terminated && c.endPushes > 0) {
		return
	}
	c.ended = true
	u.mu.Lock()
	u.left--
	if u.left == 0 {
		close(u.done)
	}
	u.mu.Unlock()
}

func (u *sipCaller) result() benchSIPPush {
	r := benchSIPPush{Calls: len(u.calls)}
	lat := make([]time.Duration, 0, len(u.calls))
	for i := range u.calls {
		c := &u.calls[i]
		c.mu.Lock()
		if !c.pushedAt.IsZero() {
			r.Pushed++
			lat = append(lat, c.pushedAt.Sub(c.sent))
		}
		r.CallPushes += c.callPushes
		if c.callPushes > 1 {
			r.Twice++
		}
		r.EndPushes += c.endPushes
		if c.terminated {
			r.Terminated++
		}
		if c.failed || !c.ended {
			r.Failed++
		}
		c.mu.Unlock()
	}
	u.mu.Lock()
	r.Elapsed = u.last.Sub(u.first)
	u.mu.Unlock()
	r.P50, r.P99, r.Max = percentiles(lat)
	return r
}

// parseSIPResponse reads what the caller needs of a response: status,
// Call-ID, the CSeq method and the To tag.
func parseSIPResponse(msg []byte) (code int, callID, method, toTag string, ok bool) {
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	lines := strings.Split(string(head), "\r\n")
	f := strings.Fields(lines[0])
	if len(f) < 2 || f[0] != "SIP/2.0" {
		return 0, "", "", "", false
	}
	code, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, "", "", "", false
	}
	for _, l := range lines[1:] {
		name, v, found := strings.Cut(l, ":")
		if !found {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "call-id", "i":
			callID = v
		case "cseq":
			if f := strings.Fields(v); len(f) == 2 {
				method = f[1]
			}
		case "to", "t":
			if _, tag, found := strings.Cut(v, ";tag="); found {
				toTag, _, _ = strings.Cut(tag, ";")
			}
		}
	}
	return code, callID, method, toTag, callID != "" && method != ""
}
