// Package component is pushd's push component: the XEP-0114 link to an
// XMPP router (pushd's own or a foreign one: Prosody, ejabberd), the
// XEP-0357 app server the router publishes to, the XEP-0050 commands
// devices register with, and the device registry on badger.
//
// It owns the XMPP side of push only. Pushes leave through the one
// dispatcher (component/dispatch); payloads are built by component/payload.
// It must never log a JID, a token, a name or a message body in clear
// (S3: JIDs go through internal/redact), never keep an account JID or
// device id in clear in the store, and never talk to a provider itself.
package component

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pushd/component/dispatch"
	"pushd/internal/redact"
	"pushd/internal/stanza"
)

// Config holds every component knob. Start from DefaultConfig.
type Config struct {
	// Domain is the component's JID (e.g. "push.example.com"). Required.
	Domain string
	// Secret is the XEP-0114 handshake secret. Required.
	Secret string
	// Router is the router's component port, host:port (used by Run when
	// Dial is nil).
	Router string
	// Dial opens a connection to the router; default a TCP dial of Router.
	// `pushd serve` dials a net.Pipe whose other end the built-in router
	// serves, so both use the same XEP-0114 code path.
	Dial func(ctx context.Context) (net.Conn, error)
	// AllowDomains, when not empty, limits registration to accounts of
	// these domains. Default: any domain the router forwards.
	AllowDomains []string
	// NegotiationTimeout bounds connect + handshake. Default 10 s.
	NegotiationTimeout time.Duration
	// BackoffMin and BackoffMax shape reconnection: min·2^(n-1) capped at
	// max, jittered to between half and all of it. Defaults 500 ms, 30 s.
	// The count restarts after a link that negotiated.
	BackoffMin, BackoffMax time.Duration
	// CommandTTL is how long a multi-step command waits for its next step
	// (default 10 min); MaxCommandSessions bounds those waiting (default
	// 10 000).
	CommandTTL         time.Duration
	MaxCommandSessions int

	// Now, Sleep and Jitter are the clock (tests inject them).
	Now    func() time.Time
	Sleep  func(ctx context.Context, d time.Duration) error
	Jitter func() float64
	// Logger (default slog.Default()); Redactor hashes JIDs for logs
	// (default a fresh one).
	Logger   *slog.Logger
	Redactor *redact.Redactor
	// Metrics registers the component's series when set.
	Metrics prometheus.Registerer
	// Node is where devices should reconnect (payload v1's node field,
	// sealed with the rest): `pushd serve` sets its node's client address,
	// so that after a failover the push names the node that took the
	// device over. Default empty: the field is left out.
	Node string
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		NegotiationTimeout: 10 * time.Second,
		BackoffMin:         500 * time.Millisecond,
		BackoffMax:         30 * time.Second,
		CommandTTL:         10 * time.Minute,
		MaxCommandSessions: 10_000,
		Now:                time.Now,
		Sleep:              sleepCtx,
		Jitter:             rand.Float64,
	}
}

func (c *Config) fill() {
	d := DefaultConfig()
	if c.NegotiationTimeout <= 0 {
		c.NegotiationTimeout = d.NegotiationTimeout
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = d.BackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = d.BackoffMax
	}
	if c.CommandTTL <= 0 {
		c.CommandTTL = d.CommandTTL
	}
	if c.MaxCommandSessions <= 0 {
		c.MaxCommandSessions = d.MaxCommandSessions
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	if c.Sleep == nil {
		c.Sleep = d.Sleep
	}
	if c.Jitter == nil {
		c.Jitter = d.Jitter
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Redactor == nil {
		c.Redactor = redact.New()
	}
	c.Domain = strings.ToLower(c.Domain)
}

// Submitter is the dispatcher as the component uses it.
type Submitter interface {
	Submit(ctx context.Context, job dispatch.Job) (string, error)
}

// Component is a running push component. Safe for concurrent use.
type Component struct {
	cfg      Config
	reg      *Registry
	dispatch Submitter
	log      *slog.Logger
	red      *redact.Redactor
	sessions cmdSessions
	m        *metrics
	up       atomic.Bool

	mu   sync.Mutex
	conn net.Conn // the live link, closed to stop it
}

// New returns a component serving reg and submitting to d.
func New(cfg Config, reg *Registry, d Submitter) (*Component, error) {
	cfg.fill()
	if cfg.Domain == "" {
		return nil, errors.New("component: domain is required")
	}
	if reg == nil || d == nil {
		return nil, errors.New("component: registry and dispatcher are required")
	}
	c := &Component{cfg: cfg, reg: reg, dispatch: d, log: cfg.Logger.With("component", "push"), red: cfg.Redactor,
		sessions: cmdSessions{ttl: cfg.CommandTTL, max: cfg.MaxCommandSessions}}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	c.m = m
	return c, nil
}

// Registry returns the device registry.
func (c *Component) Registry() *Registry { return c.reg }

// Domain returns the component's JID.
func (c *Component) Domain() string { return c.cfg.Domain }

// Connected reports whether the link to the router is up (for readiness).
func (c *Component) Connected() bool { return c.up.Load() }

// Handle answers one stanza from the router; nil means no answer. It is
// what the link calls for every stanza, exported so tests can drive the
// app server without a socket.
func (c *Component) Handle(ctx context.Context, st *stanza.Element) *stanza.Element {
	if st.Name.Local != "iq" {
		return nil // messages and presence to the component are ignored
	}
	typ := st.Get("type")
	if typ != "get" && typ != "set" {
		return nil
	}
	payload := st.FirstElement()
	if payload == nil {
		return iqError(st, c.cfg.Domain, errModify("bad-request"))
	}
	var (
		reply *stanza.Element
		serr  *stanzaError
	)
	switch {
	case typ == "get" && payload.Is(stanza.NSDiscoInfo, "query"):
		reply, serr = c.discoInfo(st, payload)
	case typ == "get" && payload.Is(stanza.NSDiscoItem, "query"):
		reply, serr = c.discoItems(st, payload)
	case typ == "get" && payload.Is(stanza.NSPing, "ping"):
		reply = iqResult(st, c.cfg.Domain)
	case typ == "set" && payload.Is(nsCommands, "command"):
		reply, serr = c.command(st, payload)
	case typ == "set" && payload.Is(nsPubsub, "pubsub"):
		reply, serr = c.publish(ctx, st, payload)
	default:
		serr = errServiceUnavailable
	}
	if serr != nil {
		return iqError(st, c.cfg.Domain, serr)
	}
	return reply
}

func (c *Component) discoInfo(iq, q *stanza.Element) (*stanza.Element, *stanzaError) {
	node := q.Get("node")
	res := stanza.New(stanza.NSDiscoInfo, "query")
	switch {
	case node == "":
		res.Add(stanza.New(stanza.NSDiscoInfo, "identity", "category", "pubsub", "type", "push", "name", "pushd"))
		for _, f := range []string{stanza.NSDiscoInfo, stanza.NSDiscoItem, stanza.NSPush, nsCommands, nsData, stanza.NSPing} {
			res.Add(stanza.New(stanza.NSDiscoInfo, "feature", "var", f))
		}
	case node == nsCommands:
		res.Set("node", node)
		res.Add(stanza.New(stanza.NSDiscoInfo, "identity", "category", "automation", "type", "command-list"))
	default:
		cmd, ok := lookupCommand(node)
		if !ok {
			return nil, errItemNotFound
		}
		res.Set("node", node)
		res.Add(stanza.New(stanza.NSDiscoInfo, "identity", "category", "automation", "type", "command-node", "name", cmd.name))
		res.Add(stanza.New(stanza.NSDiscoInfo, "feature", "var", nsCommands))
		res.Add(stanza.New(stanza.NSDiscoInfo, "feature", "var", nsData))
	}
	return iqResult(iq, c.cfg.Domain).Add(res), nil
}

func (c *Component) discoItems(iq, q *stanza.Element) (*stanza.Element, *stanzaError) {
	node := q.Get("node")
	res := stanza.New(stanza.NSDiscoItem, "query")
	switch node {
	case "":
	case nsCommands:
		res.Set("node", node)
		for _, cmd := range commands {
			res.Add(stanza.New(stanza.NSDiscoItem, "item", "jid", c.cfg.Domain, "node", cmd.node, "name", cmd.name))
		}
	default:
		return nil, errItemNotFound
	}
	return iqResult(iq, c.cfg.Domain).Add(res), nil
}

// command serves XEP-0050: one-step (execute with a submitted form) and
// multi-step (execute → form → submit).
func (c *Component) command(iq, el *stanza.Element) (*stanza.Element, *stanzaError) {
	node := el.Get("node")
	cmd, ok := lookupCommand(node)
	if !ok {
		return nil, errItemNotFound
	}
	from := iq.Get("from")
	account := bareJID(from)
	if !strings.Contains(account, "@") || !c.allowed(account) {
		c.m.command(node, "forbidden")
		return nil, &stanzaError{Type: "auth", Condition: "forbidden"}
	}
	action := el.Get("action")
	sid := el.Get("sessionid")
	x := el.Child(nsData, "x")
	submitted := x != nil && (x.Get("type") == "submit" || x.Get("type") == "")
	now := c.cfg.Now()
	switch action {
	case "", "execute", "complete", "next":
	case "cancel":
		if sid != "" {
			c.sessions.take(now, sid, node, from)
		}
		return c.cmdReply(iq, node, sid, "canceled"), nil
	case "prev":
		return nil, &stanzaError{Type: "modify", Condition: "bad-request", App: stanza.New(nsCommands, "bad-action")}
	default:
		return nil, &stanzaError{Type: "modify", Condition: "bad-request", App: stanza.New(nsCommands, "malformed-action")}
	}
	if sid != "" {
		found, expired := c.sessions.take(now, sid, node, from)
		switch {
		case !found:
			return nil, &stanzaError{Type: "modify", Condition: "bad-request", App: stanza.New(nsCommands, "bad-sessionid")}
		case expired:
			return nil, &stanzaError{Type: "cancel", Condition: "not-allowed", App: stanza.New(nsCommands, "session-expired")}
		case !submitted:
			return nil, badPayload("a submitted form is required")
		}
		return c.complete(iq, cmd, account, sid, parseForm(x))
	}
	if submitted {
		return c.complete(iq, cmd, account, randomString(12), parseForm(x))
	}
	sid, ok = c.sessions.start(now, node, from)
	if !ok {
		return nil, errResourceConstraint
	}
	r := c.cmdReply(iq, node, sid, "executing")
	cmdEl := r.FirstElement()
	cmdEl.Add(stanza.New(nsCommands, "actions", "execute", "complete").Add(stanza.New(nsCommands, "complete")))
	cmdEl.Add(commandForm(cmd))
	return r, nil
}

func (c *Component) cmdReply(iq *stanza.Element, node, sid, status string) *stanza.Element {
	el := stanza.New(nsCommands, "command", "node", node, "status", status)
	if sid != "" {
		el.Set("sessionid", sid)
	}
	return iqResult(iq, c.cfg.Domain).Add(el)
}

// complete runs a command on its submitted form.
func (c *Component) complete(iq *stanza.Element, cmd command, account, sid string, f form) (*stanza.Element, *stanzaError) {
	who := c.red.Attr("account", account)
	if cmd.register {
		req, err := parseRegister(cmd, account, f)
		if err != nil {
			c.m.command(cmd.node, "bad_request")
			c.log.Info("push registration refused", who, "command", cmd.node, "err", err)
			return nil, badPayload(err.Error())
		}
		// In a cluster Register returns once the other members hold the
		// registration (H2): only then is the command answered.
		d, created, err := c.reg.Register(req)
		if err != nil {
			c.m.command(cmd.node, "error")
			c.log.Error("push registration failed", who, "command", cmd.node, "err", err)
			return nil, &stanzaError{Type: "wait", Condition: "internal-server-error"}
		}
		c.m.command(cmd.node, "ok")
		c.log.Info("push device registered", who, "command", cmd.node, "provider", d.Provider,
			"new", created, "key", len(d.Key) > 0, "voip", d.VoIPToken != "", "region", d.Region)
		r := c.cmdReply(iq, cmd.node, sid, "completed")
		fields := []formField{
			{Var: "jid", Type: "jid-single", Values: []string{c.cfg.Domain}},
			{Var: "node", Type: "text-single", Values: []string{d.Node}},
			{Var: "secret", Type: "text-private", Values: []string{d.Secret}},
		}
		r.FirstElement().Add(buildForm("result", "", "", fields))
		return r, nil
	}
	req, err := parseUnregister(cmd, f)
	if err != nil {
		c.m.command(cmd.node, "bad_request")
		return nil, badPayload(err.Error())
	}
	n, err := c.reg.Unregister(account, req.DeviceID, req.Token, req.Provider)
	if err != nil {
		c.m.command(cmd.node, "error")
		c.log.Error("push unregistration failed", who, "command", cmd.node, "err", err)
		return nil, &stanzaError{Type: "wait", Condition: "internal-server-error"}
	}
	if n == 0 {
		c.m.command(cmd.node, "not_found")
		return nil, errItemNotFound
	}
	c.m.command(cmd.node, "ok")
	c.log.Info("push device unregistered", who, "command", cmd.node, "removed", n)
	r := c.cmdReply(iq, cmd.node, sid, "completed")
	r.FirstElement().Add(stanza.New(nsCommands, "note", "type", "info").AddText("device unregistered"))
	return r, nil
}

func (c *Component) allowed(account string) bool {
	if len(c.cfg.AllowDomains) == 0 {
		return true
	}
	d := domainOf(account)
	for _, a := range c.cfg.AllowDomains {
		if strings.EqualFold(a, d) {
			return true
		}
	}
	return false
}

func bareJID(j string) string {
	if i := strings.IndexByte(j, '/'); i >= 0 {
		j = j[:i]
	}
	return strings.ToLower(j)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
