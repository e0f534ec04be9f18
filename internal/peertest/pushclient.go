package peertest

import (
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// PushClientOptions configures StartPushClient.
type PushClientOptions struct {
	// Addr is the server's c2s listener (STARTTLS), host:port.
	Addr string
	// Domain is the server's domain (pings go there).
	Domain string
	// JID is the account's bare JID; Password its password.
	JID      string
	Password string
	// AutoApprove accepts and reciprocates subscription requests.
	AutoApprove bool
	// Timeout bounds each network step inside the script (connect, IQ,
	// ack); default 30 s. A command's answer is awaited Timeout + 30 s
	// (plus the command's own TIMEOUT for the wait-* commands).
	Timeout time.Duration
	// Name prefixes its log lines; default the JID's local part.
	Name string
}

// PushClient is a running testdata/peers/pushclient.py: a slixmpp client
// driven one command at a time.
type PushClient struct {
	Proc *Process
	JID  string // bare JID
	opts PushClientOptions

	cmdMu sync.Mutex // one command at a time
	stdin io.WriteCloser
	sig   signal

	mu      sync.Mutex
	answers []Result
	bad     []string
}

// StartPushClient starts pushclient.py (not logged in yet: call Login).
func StartPushClient(t testing.TB, opts PushClientOptions) *PushClient {
	t.Helper()
	RequirePeer(t, PeerSlixmpp)
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Name == "" {
		opts.Name, _, _ = strings.Cut(opts.JID, "@")
	}
	path := filepath.Join(PeersDir(t), "pushclient.py")
	args := append([]string{"-u", path}, ServerArgs(t, opts.Addr, opts.Domain)...)
	args = append(args, "--jid", opts.JID, "--password", opts.Password,
		"--timeout", fmt.Sprint(opts.Timeout.Seconds()))
	if opts.AutoApprove {
		args = append(args, "--auto-approve")
	}
	c := &PushClient{JID: opts.JID, opts: opts}
	cmd := exec.Command(Python, args...)
	cmd.Dir = filepath.Dir(path)
	cmd.Stdout = &lineSink{fn: c.line}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.stdin = stdin
	c.Proc = Start(t, opts.Name, cmd)
	go func() { <-c.Proc.Done(); c.sig.broadcast() }()
	return c
}

func (c *PushClient) line(l []byte) {
	c.mu.Lock()
	defer func() { c.mu.Unlock(); c.sig.broadcast() }()
	var r Result
	if err := json.Unmarshal(l, &r); err != nil {
		c.bad = append(c.bad, string(l))
		return
	}
	c.answers = append(c.answers, r)
}

// Do sends one command line and returns its JSON answer. The error is
// non-nil when no answer came (process died, timeout) or the answer has
// ok=false; the answer is returned whenever there is one.
func (c *PushClient) Do(cmd string) (Result, error) {
	return c.do(cmd, c.opts.Timeout+30*time.Second)
}

func (c *PushClient) do(cmd string, timeout time.Duration) (Result, error) {
	if strings.ContainsAny(cmd, "\r\n") {
		return nil, fmt.Errorf("pushclient: command %q has a line break", cmd)
	}
	c.cmdMu.Lock()
	defer c.cmdMu.Unlock()
	c.mu.Lock()
	n := len(c.answers)
	c.mu.Unlock()
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		return nil, fmt.Errorf("pushclient %s: %q: %w", c.opts.Name, cmd, err)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := c.sig.wait()
		c.mu.Lock()
		var r Result
		if len(c.answers) > n {
			r = c.answers[n]
		}
		c.mu.Unlock()
		if r != nil {
			if !r.Bool("ok") {
				msg := r.String("error")
				if msg == "" {
					msg = fmt.Sprint(map[string]any(r))
				}
				return r, fmt.Errorf("pushclient %s: %q: %s", c.opts.Name, cmd, msg)
			}
			return r, nil
		}
		if err := c.Proc.Exited(); err != nil {
			return nil, fmt.Errorf("pushclient %s: %q: %w", c.opts.Name, cmd, err)
		}
		select {
		case <-ch:
		case <-deadline.C:
			return nil, fmt.Errorf("pushclient %s: %q: no answer within %v", c.opts.Name, cmd, timeout)
		}
	}
}

// Login connects (STARTTLS, SCRAM-SHA-256), binds resource, enables
// XEP-0198 with resumption, gets the roster and sends initial presence.
// It returns the full JID and the SM id.
func (c *PushClient) Login(resource string) (jid, smID string, err error) {
	r, err := c.Do("login " + resource)
	return r.String("jid"), r.String("sm_id"), err
}

// IQResult is the answer to an enable or disable IQ.
type IQResult struct {
	Type      string // "result" or "error"
	Condition string // error condition, e.g. "item-not-found"
	ErrorType string // error type, e.g. "cancel"
}

func iqResult(r Result) IQResult {
	return IQResult{Type: r.String("type"), Condition: r.String("error"), ErrorType: r.String("error_type")}
}

// Enable sends an XEP-0357 enable toward appServer/node with a
// publish-options form carrying secret. An IQ error is returned both in
// IQResult and as err.
func (c *PushClient) Enable(appServer, node, secret string) (IQResult, error) {
	r, err := c.Do(strings.Join([]string{"enable", appServer, node, secret}, " "))
	return iqResult(r), err
}

// EnableEncrypted is Enable with <encrypt xmlns='tigase:push:encrypt:0'
// alg=alg>keyB64</encrypt> (alg "aes-128-gcm" or "aes-256-gcm").
func (c *PushClient) EnableEncrypted(appServer, node, secret, keyB64, alg string) (IQResult, error) {
	r, err := c.Do(strings.Join([]string{"enable", appServer, node, secret, keyB64, alg}, " "))
	return iqResult(r), err
}

// Disable sends an XEP-0357 disable (node may be empty: every node).
func (c *PushClient) Disable(appServer, node string) (IQResult, error) {
	r, err := c.Do(strings.TrimSpace("disable " + appServer + " " + node))
	return iqResult(r), err
}

// Inactive sends the XEP-0352 <inactive/> nonza and waits for a ping round
// trip, so the server has processed it.
func (c *PushClient) Inactive() error { _, err := c.Do("inactive"); return err }

// Active sends <active/> like Inactive.
func (c *PushClient) Active() error { _, err := c.Do("active"); return err }

// Drop aborts the TCP connection without closing the stream, after making
// sure the server's XEP-0198 queue for this stream is empty (everything it
// sent was acknowledged), so later stanzas are the only ones held.
func (c *PushClient) Drop() error { _, err := c.Do("drop"); return err }

// DropNoSync aborts the TCP connection at once, unacknowledged stanzas
// and all.
func (c *PushClient) DropNoSync() error { _, err := c.Do("drop nosync"); return err }

// Resume reconnects and resumes the XEP-0198 session. resumed is false
// (and err set) when the server started a new session instead.
func (c *PushClient) Resume() (resumed bool, err error) {
	r, err := c.Do("resume")
	return r.Bool("resumed"), err
}

// Rebind opens a new connection and a new session binding resource again
// (not a resumption).
func (c *PushClient) Rebind(resource string) (jid, smID string, err error) {
	r, err := c.Do("rebind " + resource)
	return r.String("jid"), r.String("sm_id"), err
}

// Send sends a chat message and returns once the server acked it
// (XEP-0198).
func (c *PushClient) Send(to, body string) error {
	_, err := c.Do("send " + to + " " + body)
	return err
}

// Presence broadcasts presence: show is available, away, chat, dnd, xa or
// unavailable; status may be empty.
func (c *PushClient) Presence(show, status string) error {
	_, err := c.Do(strings.TrimSpace("presence " + show + " " + status))
	return err
}

// Subscribe sends a subscription request to jid.
func (c *PushClient) Subscribe(jid string) error { _, err := c.Do("subscribe " + jid); return err }

// Approve accepts jid's subscription request.
func (c *PushClient) Approve(jid string) error { _, err := c.Do("approve " + jid); return err }

// SetAutoApprove turns automatic acceptance of subscriptions on or off.
func (c *PushClient) SetAutoApprove(on bool) error {
	v := "off"
	if on {
		v = "on"
	}
	_, err := c.Do("auto-approve " + v)
	return err
}

// Messages is what WaitMessages returns.
type Messages struct {
	Bodies     []string
	From       []string
	Delayed    []bool
	Duplicates []string // bodies received before, or twice in this batch
}

// WaitMessages waits up to timeout until n messages arrived since the last
// WaitMessages and returns them (all that arrived, even past n). err is set
// when fewer than n arrived.
func (c *PushClient) WaitMessages(n int, timeout time.Duration) (Messages, error) {
	r, err := c.do(fmt.Sprintf("wait-messages %d %g", n, timeout.Seconds()), timeout+c.opts.Timeout+30*time.Second)
	m := Messages{Bodies: r.Strings("bodies"), From: r.Strings("from"), Duplicates: r.Strings("duplicates")}
	if ms, ok := r["messages"].([]any); ok {
		for _, x := range ms {
			o, _ := x.(map[string]any)
			d, _ := o["delayed"].(bool)
			m.Delayed = append(m.Delayed, d)
		}
	}
	if err != nil && r != nil && r.String("error") == "" {
		err = fmt.Errorf("pushclient %s: got %d of %d messages within %v: %q", c.opts.Name, len(m.Bodies), n, timeout, m.Bodies)
	}
	return m, err
}

// PresenceInfo is one presence stanza the client received.
type PresenceInfo struct {
	From   string
	Type   string // available, unavailable, subscribe, subscribed, ...
	Show   string
	Status string
}

// Presences returns the presence stanzas received since the last call,
// waiting up to timeout for at least n of them (n=0: at once).
func (c *PushClient) Presences(n int, timeout time.Duration) ([]PresenceInfo, error) {
	cmd := "presences"
	if n > 0 {
		cmd = fmt.Sprintf("presences %d %g", n, timeout.Seconds())
	}
	r, err := c.do(cmd, timeout+c.opts.Timeout+30*time.Second)
	var out []PresenceInfo
	if ps, ok := r["presences"].([]any); ok {
		for _, x := range ps {
			o := Result(asMap(x))
			out = append(out, PresenceInfo{From: o.String("from"), Type: o.String("type"), Show: o.String("show"), Status: o.String("status")})
		}
	}
	return out, err
}

func asMap(x any) map[string]any { m, _ := x.(map[string]any); return m }

// Roster returns {jid: subscription}.
func (c *PushClient) Roster() (map[string]string, error) {
	r, err := c.Do("roster")
	out := map[string]string{}
	for k, v := range r.Sub("items") {
		s, _ := v.(string)
		out[k] = s
	}
	return out, err
}

// DiscoIdentity is one identity of a disco#info answer.
type DiscoIdentity struct{ Category, Type, Name string }

// DiscoInfo queries jid (node may be empty) and returns its identities and
// features.
func (c *PushClient) DiscoInfo(jid, node string) ([]DiscoIdentity, []string, error) {
	r, err := c.Do(strings.TrimSpace("disco " + jid + " " + node))
	var ids []DiscoIdentity
	if xs, ok := r["identities"].([]any); ok {
		for _, x := range xs {
			o := Result(asMap(x))
			ids = append(ids, DiscoIdentity{Category: o.String("category"), Type: o.String("type"), Name: o.String("name")})
		}
	}
	return ids, r.Strings("features"), err
}

// Ping makes a round trip to the server.
func (c *PushClient) Ping() error { _, err := c.Do("ping"); return err }

// Logout closes the stream cleanly.
func (c *PushClient) Logout() error { _, err := c.Do("logout"); return err }

// Quit ends the script (it is also killed on cleanup).
func (c *PushClient) Quit() error {
	_, err := c.Do("quit")
	if err == nil {
		select {
		case <-c.Proc.Done():
		case <-time.After(c.opts.Timeout):
			return fmt.Errorf("pushclient %s: still running after quit", c.opts.Name)
		}
	}
	return err
}
