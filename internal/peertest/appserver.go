package peertest

import (
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// App server answer modes (testdata/peers/appserver.py --mode).
const (
	AppServerOK         = "ok"           // <iq type='result'/>
	AppServerWait       = "wait"         // error type wait, resource-constraint
	AppServerCancel     = "cancel"       // error type cancel, item-not-found
	AppServerWaitThenOK = "wait-then-ok" // wait for the first publish, then result
)

// AppServerOptions configures StartAppServer.
type AppServerOptions struct {
	// Addr is the router's XEP-0114 listener (host:port on 127.0.0.1).
	Addr string
	// Domain is the component's JID, e.g. "push.example.test".
	Domain string
	// Secret is the component handshake secret.
	Secret string
	// Mode is how publishes are answered; default AppServerOK.
	Mode string
	// DecryptKey (base64 AES key), when set, makes the app server decrypt
	// tigase:push:encrypt:0 payloads into Publish.Decrypted.
	DecryptKey string
	// Reconnect makes the app server reconnect when the router goes away
	// (a new "connected" event each time) instead of exiting.
	Reconnect bool
	// ConnectTimeout bounds WaitConnected; default 30 s.
	ConnectTimeout time.Duration
	// Name prefixes its log lines; default "appserver".
	Name string
}

// Field is one data form field in document order.
type Field struct {
	Var    string   `json:"var"`
	Type   string   `json:"type"`
	Values []string `json:"values"`
}

// Encrypted is the tigase:push:encrypt element of a notification.
type Encrypted struct {
	XMLNS   string `json:"xmlns"`
	IV      string `json:"iv"`
	Payload string `json:"payload"`
}

// Publish is one XEP-0357 publish IQ the app server received (one JSON
// line of appserver.py).
type Publish struct {
	Seq    int    `json:"seq"`
	From   string `json:"from"`
	To     string `json:"to"`
	ID     string `json:"id"`
	Node   string `json:"node"`
	Answer string `json:"answer"` // "result", "wait" or "cancel"
	// FormType is the FORM_TYPE of the notification form
	// (urn:xmpp:push:summary), empty without a form.
	FormType string `json:"form_type"`
	// Fields maps var to a string, a []any of strings (several values) or
	// nil (no value); FORM_TYPE is left out. FieldList keeps the order.
	Fields    map[string]any `json:"fields"`
	FieldList []Field        `json:"field_list"`
	// PublishOptions is the publish-options form (FORM_TYPE left out), nil
	// without one.
	PublishOptions         map[string]any `json:"publish_options"`
	PublishOptionsFormType string         `json:"publish_options_form_type"`
	PublishOptionsList     []Field        `json:"publish_options_list"`
	Encrypted              *Encrypted     `json:"encrypted"`
	Decrypted              *string        `json:"decrypted"`
	// NotificationChildren are the {ns}name of <notification/>'s children.
	NotificationChildren []string `json:"notification_children"`
	Raw                  string   `json:"raw"`
}

// Value is the first value of the summary field v ("" when absent).
func (p Publish) Value(v string) string { return firstValue(p.FieldList, v) }

// Option is the first value of the publish-options field v.
func (p Publish) Option(v string) string { return firstValue(p.PublishOptionsList, v) }

// FieldVars are the summary form's field vars in document order
// (FORM_TYPE included).
func (p Publish) FieldVars() []string { return vars(p.FieldList) }

// OptionVars are the publish-options field vars in document order.
func (p Publish) OptionVars() []string { return vars(p.PublishOptionsList) }

func firstValue(fs []Field, v string) string {
	for _, f := range fs {
		if f.Var == v && len(f.Values) > 0 {
			return f.Values[0]
		}
	}
	return ""
}

func vars(fs []Field) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Var
	}
	return out
}

// AppServer is a running testdata/peers/appserver.py.
type AppServer struct {
	Proc *Process
	opts AppServerOptions

	stdin io.WriteCloser
	sig   signal

	mu        sync.Mutex
	publishes []Publish
	next      int // index of the next publish Next returns
	connected int
	events    []map[string]any // non-publish lines
	bad       []string         // lines that are not JSON
}

// StartAppServer starts appserver.py against opts.Addr. It does not wait for
// the handshake: call WaitConnected.
func StartAppServer(t testing.TB, opts AppServerOptions) *AppServer {
	t.Helper()
	RequirePeer(t, PeerSlixmpp)
	if opts.Mode == "" {
		opts.Mode = AppServerOK
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = 30 * time.Second
	}
	if opts.Name == "" {
		opts.Name = "appserver"
	}
	host, port := splitAddr(t, opts.Addr)
	path := filepath.Join(PeersDir(t), "appserver.py")
	args := []string{"-u", path, "--host", host, "--component-port", fmt.Sprint(port),
		"--component", opts.Domain, "--secret", opts.Secret, "--mode", opts.Mode}
	if opts.DecryptKey != "" {
		args = append(args, "--decrypt-key", opts.DecryptKey)
	}
	if opts.Reconnect {
		args = append(args, "--reconnect")
	}
	a := &AppServer{opts: opts}
	cmd := exec.Command(Python, args...)
	cmd.Dir = filepath.Dir(path)
	cmd.Stdout = &lineSink{fn: a.line}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	a.stdin = stdin
	a.Proc = Start(t, opts.Name, cmd)
	go func() { <-a.Proc.Done(); a.sig.broadcast() }()
	return a
}

func (a *AppServer) line(l []byte) {
	var ev map[string]any
	a.mu.Lock()
	defer func() { a.mu.Unlock(); a.sig.broadcast() }()
	if err := json.Unmarshal(l, &ev); err != nil {
		a.bad = append(a.bad, string(l))
		return
	}
	switch ev["event"] {
	case "publish":
		var p Publish
		if err := json.Unmarshal(l, &p); err != nil {
			a.bad = append(a.bad, string(l))
			return
		}
		a.publishes = append(a.publishes, p)
	case "connected":
		a.connected++
		a.events = append(a.events, ev)
	default:
		a.events = append(a.events, ev)
	}
}

// await waits until cond (called under a.mu) is true, the process exits or
// timeout passes.
func (a *AppServer) await(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := a.sig.wait()
		a.mu.Lock()
		ok := cond()
		a.mu.Unlock()
		if ok {
			return nil
		}
		if err := a.Proc.Exited(); err != nil {
			return fmt.Errorf("appserver: %s: %w", what, err)
		}
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("appserver: %s: timed out after %v", what, timeout)
		}
	}
}

// WaitConnected waits (up to ConnectTimeout) until the component handshake
// has succeeded at least once. With Reconnect, WaitReconnected waits for
// later connections.
func (a *AppServer) WaitConnected() error {
	return a.WaitReconnected(1)
}

// WaitReconnected waits until the app server has connected n times in all.
func (a *AppServer) WaitReconnected(n int) error {
	return a.await(a.opts.ConnectTimeout, fmt.Sprintf("connection %d", n), func() bool { return a.connected >= n })
}

// Next returns the next publish not returned by Next yet, waiting up to
// timeout for it to arrive.
func (a *AppServer) Next(timeout time.Duration) (Publish, error) {
	var p Publish
	err := a.await(timeout, "waiting for a publish", func() bool {
		if a.next < len(a.publishes) {
			p = a.publishes[a.next]
			a.next++
			return true
		}
		return false
	})
	return p, err
}

// ExpectNone waits the whole of d (a bounded wait by design: it proves an
// absence) and returns an error describing the first publish that arrived
// in that time and was not yet returned by Next; that publish is consumed.
// Choose d above the server's push delay (Prosody batches for 1 s).
func (a *AppServer) ExpectNone(d time.Duration) error {
	var p Publish
	err := a.await(d, "", func() bool {
		if a.next < len(a.publishes) {
			p = a.publishes[a.next]
			a.next++
			return true
		}
		return false
	})
	if err == nil {
		return fmt.Errorf("appserver: unexpected publish #%d to node %q: %s", p.Seq, p.Node, p.Raw)
	}
	if a.Proc.Exited() != nil {
		return err
	}
	return nil
}

// All returns every publish received so far, in arrival order.
func (a *AppServer) All() []Publish {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Publish(nil), a.publishes...)
}

// Events returns the JSON lines that were not publishes (connected,
// disconnected, disco, mode, other, ...), in order.
func (a *AppServer) Events() []map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]map[string]any(nil), a.events...)
}

// SetMode changes how the next publishes are answered and waits until the
// app server confirmed it. wait-then-ok starts counting afresh.
func (a *AppServer) SetMode(mode string) error {
	a.mu.Lock()
	n := len(a.events)
	a.mu.Unlock()
	if _, err := fmt.Fprintf(a.stdin, "mode %s\n", mode); err != nil {
		return fmt.Errorf("appserver: set mode: %w", err)
	}
	bad := false
	err := a.await(a.opts.ConnectTimeout, "mode "+mode, func() bool {
		for _, ev := range a.events[n:] {
			if ev["event"] == "bad_command" {
				bad = true
				return true
			}
			if ev["event"] == "mode" && ev["mode"] == mode {
				return true
			}
		}
		return false
	})
	if err == nil && bad {
		err = fmt.Errorf("appserver: mode %q refused", mode)
	}
	return err
}

// Stop stops the app server (also done on cleanup).
func (a *AppServer) Stop() {
	a.stdin.Close()
	a.Proc.Stop(5 * time.Second)
}
