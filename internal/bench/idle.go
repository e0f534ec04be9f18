package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// IdleConfig is a set of idle sessions for memory measurements.
type IdleConfig struct {
	Addr, Domain string
	Users        []Credentials // or UserPattern + Password
	UserPattern  string        // default "idle%d"
	Password     string
	Sessions     int
	// StreamManagement enables XEP-0198 with resume on every session.
	StreamManagement bool
	// Drop closes every TCP connection abruptly once logged in (no stream
	// close), so that a server with XEP-0198 hibernates the sessions.
	// Needs StreamManagement.
	Drop             bool
	InsecureTLS      bool
	LoginConcurrency int // default 16
	// Push, when set, registers every session's device with a push
	// component and enables XEP-0357 push before the drop.
	Push *PushConfig
}

// PushConfig is how idle sessions register for pushes.
type PushConfig struct {
	Component string                   // the push component's JID, e.g. push.localhost
	Token     func(Credentials) string // the device's APNS token
	Key       string                   // base64 of the devices' 32-byte payload key
}

// IdleSessions holds the sessions ConnectIdle opened.
type IdleSessions struct {
	conns []*conn
	Login time.Duration // time to log all of them in
}

// ConnectIdle logs in cfg.Sessions sessions (each sends initial presence)
// and keeps them open, or drops them for hibernation. Measure the server's
// RSS (RSS) before and after, and divide by Sessions.
func ConnectIdle(ctx context.Context, cfg IdleConfig) (*IdleSessions, error) {
	if cfg.LoginConcurrency <= 0 {
		cfg.LoginConcurrency = 16
	}
	if cfg.Drop && !cfg.StreamManagement {
		return nil, fmt.Errorf("bench: Drop needs StreamManagement")
	}
	if len(cfg.Users) == 0 {
		if cfg.UserPattern == "" {
			cfg.UserPattern = "idle%d"
		}
		cfg.Users = UserCredentials(cfg.UserPattern, cfg.Password, cfg.Sessions)
	}
	if len(cfg.Users) < cfg.Sessions {
		return nil, fmt.Errorf("bench: %d sessions need as many users, have %d", cfg.Sessions, len(cfg.Users))
	}
	start := time.Now()
	conns, err := login(ctx, cfg.Users[:cfg.Sessions], cfg.LoginConcurrency, func(cr Credentials) dialConfig {
		return dialConfig{addr: cfg.Addr, domain: cfg.Domain, cred: cr, resource: "idle", insecure: cfg.InsecureTLS, sm: cfg.StreamManagement, presence: true, push: cfg.Push}
	})
	if err != nil {
		return nil, fmt.Errorf("bench: login: %w", err)
	}
	s := &IdleSessions{conns: conns, Login: time.Since(start)}
	if cfg.Drop {
		for _, c := range conns {
			c.drop()
		}
	}
	return s, nil
}

// JIDs returns the full JID each session bound, in login order.
func (s *IdleSessions) JIDs() []string {
	out := make([]string, len(s.conns))
	for i, c := range s.conns {
		out[i] = c.jid
	}
	return out
}

// Close ends every session that is still open (politely).
func (s *IdleSessions) Close() {
	for _, c := range s.conns {
		c.close()
	}
}

// Barrier logs one more session in and out on the server, so that the
// server has processed what the earlier sessions did (e.g. noticed the
// dropped connections) before a measurement. Servers handle connection
// events in order enough for that; it is not a substitute for a
// server-side counter.
func Barrier(ctx context.Context, addr, domain string, cred Credentials, insecure bool) error {
	c, err := dial(ctx, dialConfig{addr: addr, domain: domain, cred: cred, resource: "barrier", insecure: insecure})
	if err != nil {
		return err
	}
	defer c.close()
	_, err = c.untilPinged(domain, "barrier1")
	return err
}

// untilPinged pings the server and returns what it sent up to the answer.
func (c *conn) untilPinged(domain, id string) ([]byte, error) {
	c.raw.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.send("<iq type='get' id='" + id + "' to='" + domain + "'><ping xmlns='urn:xmpp:ping'/></iq>"); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 4096)
	for !bytes.Contains(buf, []byte(id)) {
		n, err := c.r.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			return nil, err
		}
	}
	return buf[:bytes.Index(buf, []byte(id))], nil
}

// RSS returns the resident set size of process pid in bytes, from
// /proc/<pid>/status (VmRSS).
func RSS(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("bench: unexpected VmRSS line %q", v)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("bench: no VmRSS for pid %d", pid)
}

// ProcessCPU returns the user+system CPU time process pid has used, from
// /proc/<pid>/stat.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: bad /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: bad /proc/%d/stat times", pid)
	}
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// Collect logs cred in with resource, which takes the device of that
// resource over with its queue (BEHAVIOUR M5: a new stream bound with the
// same resource gets what was queued), and counts the messages delivered
// before the answer to a ping that follows them.
func Collect(ctx context.Context, addr, domain string, cred Credentials, resource string, insecure bool) (int, error) {
	c, err := dial(ctx, dialConfig{addr: addr, domain: domain, cred: cred, resource: resource, insecure: insecure, presence: true})
	if err != nil {
		return 0, err
	}
	defer c.close()
	got, err := c.untilPinged(domain, "collect1")
	return bytes.Count(got, []byte("<message")), err
}
