package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/BurntSushi/toml"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"pushd/component"
	"pushd/component/apns"
	"pushd/component/dispatch"
	"pushd/component/fcm"
	"pushd/component/httpx"
	"pushd/internal/admin"
	"pushd/internal/redact"
	"pushd/internal/store"
)

// pushFileConfig is the push part of the TOML file: [push], [apns], [fcm],
// [proxy]. It is embedded in fileConfig for `pushd serve` and read on its
// own (with data_dir, [admin] and [log]) by `pushd component`.
type pushFileConfig struct {
	Push  pushSection  `toml:"push"`
	APNS  apnsSection  `toml:"apns"`
	FCM   fcmSection   `toml:"fcm"`
	Proxy proxySection `toml:"proxy"`
}

type pushSection struct {
	// Domain is the component's JID; default "push.<domain>" under serve.
	Domain string `toml:"domain"`
	// Secret is the XEP-0114 secret (component mode; serve makes one up for
	// the in-process link when empty).
	Secret string `toml:"secret"`
	// Router is host:port of the router's component port (component mode).
	Router string `toml:"router"`
	// AllowDomains limits registrations to accounts of these domains.
	AllowDomains []string `toml:"allow_domains"`
}

type apnsSection struct {
	Endpoint     string `toml:"endpoint"` // default https://api.push.apple.com
	CAFile       string `toml:"ca_file"`
	Auth         string `toml:"auth"` // token (default) | certificate
	KeyFile      string `toml:"key_file"`
	KeyID        string `toml:"key_id"`
	TeamID       string `toml:"team_id"`
	CertFile     string `toml:"cert_file"`
	CertPassword string `toml:"cert_password"`
	Topic        string `toml:"topic"` // bundle id; APNS is off without it
}

type fcmSection struct {
	Endpoint        string `toml:"endpoint"` // default https://fcm.googleapis.com
	CAFile          string `toml:"ca_file"`
	ProjectID       string `toml:"project_id"` // FCM is off without it
	CredentialsFile string `toml:"credentials_file"`
}

type proxySection struct {
	URL      string `toml:"url"`
	Auth     string `toml:"auth"` // "" | basic | digest
	User     string `toml:"user"`
	Password string `toml:"password"`
}

func defaultPushFileConfig() pushFileConfig {
	var c pushFileConfig
	c.APNS.Endpoint = apns.DefaultConfig().Endpoint
	c.APNS.Auth = apns.AuthToken
	c.FCM.Endpoint = fcm.DefaultConfig().Endpoint
	return c
}

// resolvePaths makes the file names of the push sections relative to the
// config file's directory.
func (c *pushFileConfig) resolvePaths(base string) {
	for _, p := range []*string{&c.APNS.CAFile, &c.APNS.KeyFile, &c.APNS.CertFile, &c.FCM.CAFile, &c.FCM.CredentialsFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
}

func (c pushFileConfig) validate(componentMode bool) error {
	if componentMode {
		if c.Push.Domain == "" || c.Push.Secret == "" || c.Push.Router == "" {
			return errors.New("config: [push] domain, secret and router are required for pushd component")
		}
	}
	switch c.APNS.Auth {
	case "", apns.AuthToken, apns.AuthCertificate:
	default:
		return fmt.Errorf("config: apns.auth %q: want token or certificate", c.APNS.Auth)
	}
	switch strings.ToLower(c.Proxy.Auth) {
	case "", "basic", "digest":
	default:
		return fmt.Errorf("config: proxy.auth %q: want basic or digest", c.Proxy.Auth)
	}
	if c.Proxy.Auth != "" && c.Proxy.URL == "" {
		return errors.New("config: proxy.auth without proxy.url")
	}
	return nil
}

// componentFileConfig is what `pushd component`, `pushd device` and
// `pushd push` read: the push sections plus the top-level keys they share
// with serve. Keys of other sections are ignored, so one file serves both.
type componentFileConfig struct {
	Domain  string `toml:"domain"`
	DataDir string `toml:"data_dir"`
	Admin   struct {
		Listen string `toml:"listen"`
	} `toml:"admin"`
	Log struct {
		Level string `toml:"level"`
	} `toml:"log"`
	pushFileConfig
}

func loadComponentConfig(path string, componentMode bool) (componentFileConfig, error) {
	var c componentFileConfig
	c.pushFileConfig = defaultPushFileConfig()
	c.Domain = "localhost"
	c.DataDir = "./data"
	c.Admin.Listen = "127.0.0.1:9090"
	c.Log.Level = "info"
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
		md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c)
		if err != nil {
			return c, fmt.Errorf("config %s: %w", path, err)
		}
		for _, k := range md.Undecoded() {
			switch k[0] {
			case "push", "apns", "fcm", "proxy":
				return c, fmt.Errorf("config %s: unknown key %q", path, k.String())
			}
		}
		base := filepath.Dir(path)
		if !filepath.IsAbs(c.DataDir) {
			c.DataDir = filepath.Join(base, c.DataDir)
		}
		c.resolvePaths(base)
	}
	if c.Push.Domain == "" && c.Domain != "" {
		c.Push.Domain = "push." + c.Domain
	}
	return c, c.validate(componentMode)
}

// pushStack is the push half of a node: providers, registry, dispatcher
// and component, built from the config in that order and closed in
// reverse.
type pushStack struct {
	registry   *component.Registry
	dispatcher *dispatch.Dispatcher
	// sw is the push switch the dispatcher obeys (O2).
	sw        *dispatch.Switch
	component *component.Component
	recorder  *component.Recorder
	// names are the providers configured, for RFC 8599's pn-provider.
	names   []dispatch.ProviderName
	closers []func()
}

// pushOptions are what the caller decides beyond the file.
type pushOptions struct {
	Domain  string // component JID
	Secret  string
	Router  string
	Dial    func(ctx context.Context) (net.Conn, error) // in-process link
	Metrics prometheus.Registerer
	Logger  *slog.Logger
	// Node is component.Config.Node: this node's client address.
	Node string
	// Switch is the node's push switch (O2); nil: the stack opens the
	// one stored in its database (component mode, operator commands).
	Switch *dispatch.Switch
}

// startPush builds the push stack on db. At least one provider must be
// configured ([apns] topic or [fcm] project_id).
func startPush(cfg pushFileConfig, db *store.DB, opts pushOptions) (*pushStack, error) {
	return startPushWith(cfg, db, opts, nil, nil)
}

// startPushWith is startPush with the dispatcher's config changed by tune
// and each provider wrapped by wrap (either may be nil): `pushd bench push`
// uses them to time the answers.
func startPushWith(cfg pushFileConfig, db *store.DB, opts pushOptions, tune func(*dispatch.Config),
	wrap func(dispatch.Provider) dispatch.Provider) (*pushStack, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &pushStack{recorder: component.NewRecorder()}
	providers, closers, err := pushProviders(cfg)
	if err != nil {
		return nil, err
	}
	s.closers = closers
	for name, p := range providers {
		s.names = append(s.names, name)
		if wrap != nil {
			p = wrap(p)
		}
		providers[name] = s.recorder.Wrap(p)
	}
	s.registry, err = component.OpenRegistry(db.Badger(), nil)
	if err != nil {
		s.close()
		return nil, err
	}
	var dm *dispatch.Metrics
	if opts.Metrics != nil {
		if dm, err = dispatch.NewMetrics(opts.Metrics); err != nil {
			s.close()
			return nil, err
		}
	}
	s.sw = opts.Switch
	if s.sw == nil {
		if s.sw, err = dispatch.OpenSwitch(db.Badger(), dispatch.SwitchConfig{Logger: log, Metrics: opts.Metrics}); err != nil {
			s.close()
			return nil, err
		}
	}
	dcfg := dispatch.DefaultConfig()
	dcfg.Logger = log
	if tune != nil {
		tune(&dcfg)
	}
	s.dispatcher, err = dispatch.New(dcfg, dispatch.Deps{DB: db.Badger(), Providers: providers, DeadToken: s.registry,
		Metrics: dm, Switch: s.sw})
	if err != nil {
		s.close()
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = s.dispatcher.Close() })
	ccfg := component.DefaultConfig()
	ccfg.Domain, ccfg.Secret, ccfg.Router, ccfg.Dial = opts.Domain, opts.Secret, opts.Router, opts.Dial
	ccfg.AllowDomains = cfg.Push.AllowDomains
	ccfg.Logger, ccfg.Metrics, ccfg.Node = log, opts.Metrics, opts.Node
	ccfg.Redactor = redact.New()
	s.component, err = component.New(ccfg, s.registry, s.dispatcher)
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *pushStack) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// pushProviders builds the configured providers.
func pushProviders(cfg pushFileConfig) (map[dispatch.ProviderName]dispatch.Provider, []func(), error) {
	out := map[dispatch.ProviderName]dispatch.Provider{}
	var closers []func()
	proxy, err := pushProxy(cfg.Proxy)
	if err != nil {
		return nil, nil, err
	}
	if cfg.APNS.Topic != "" {
		ac := apns.DefaultConfig()
		a := cfg.APNS
		ac.Endpoint, ac.Topic, ac.Auth = a.Endpoint, a.Topic, a.Auth
		ac.KeyFile, ac.KeyID, ac.TeamID = a.KeyFile, a.KeyID, a.TeamID
		ac.CertFile, ac.CertPassword = a.CertFile, a.CertPassword
		ac.HTTP.Proxy = proxy
		if a.CAFile != "" {
			if ac.HTTP.RootCAs, err = httpx.CertPoolWithFile(a.CAFile); err != nil {
				return nil, nil, fmt.Errorf("apns: %w", err)
			}
		}
		p, err := apns.New(ac)
		if err != nil {
			return nil, nil, err
		}
		out[dispatch.APNS] = p
		closers = append(closers, p.Close)
	}
	if cfg.FCM.ProjectID != "" {
		fc := fcm.DefaultConfig()
		f := cfg.FCM
		fc.Endpoint, fc.ProjectID, fc.CredentialsFile = f.Endpoint, f.ProjectID, f.CredentialsFile
		fc.HTTP.Proxy = proxy
		if f.CAFile != "" {
			if fc.HTTP.RootCAs, err = httpx.CertPoolWithFile(f.CAFile); err != nil {
				return nil, nil, fmt.Errorf("fcm: %w", err)
			}
		}
		p, err := fcm.New(context.Background(), fc)
		if err != nil {
			for _, c := range closers {
				c()
			}
			return nil, nil, err
		}
		out[dispatch.FCM] = p
		closers = append(closers, p.Close)
	}
	if len(out) == 0 {
		return nil, nil, errors.New("config: no push provider: set [apns] topic or [fcm] project_id")
	}
	return out, closers, nil
}

func pushProxy(p proxySection) (*httpx.Proxy, error) {
	if p.URL == "" {
		return nil, nil
	}
	return &httpx.Proxy{URL: p.URL, Auth: strings.ToLower(p.Auth), User: p.User, Password: p.Password}, nil
}

const componentUsage = `usage: pushd component --config FILE
Runs the push component alone against a foreign XMPP router ([push] router).`

// cmdComponent is `pushd component`: the push component, its dispatcher
// and providers, and the admin endpoint, linked to a foreign router.
func cmdComponent(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("component", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (TOML) with [push] domain, secret, router")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configPath == "" {
		fmt.Fprintln(stderr, componentUsage)
		return flag.ErrHelp
	}
	cfg, errs := componentConfig(*configPath)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	log, err := newLogger(cfg.Log.Level, stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runComponent(ctx, cfg, log, nil)
}

// runComponent runs component mode until ctx ends. started, when set, is
// called with the push stack once it runs (tests).
func runComponent(ctx context.Context, cfg componentFileConfig, log *slog.Logger, started func(*pushStack)) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	db, err := store.Open(store.Config{Dir: filepath.Join(cfg.DataDir, "db"), Domain: cfg.Domain, Logger: log})
	if err != nil {
		return err
	}
	defer db.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s, err := startPush(cfg.pushFileConfig, db, pushOptions{
		Domain: cfg.Push.Domain, Secret: cfg.Push.Secret, Router: cfg.Push.Router, Metrics: reg, Logger: log,
	})
	if err != nil {
		return err
	}
	defer s.close()
	var ready atomic.Bool
	errc := make(chan error, 2)
	n := 1
	if cfg.Admin.Listen != "" {
		token, err := adminToken(cfg.DataDir)
		if err != nil {
			return err
		}
		srv, err := admin.Listen(admin.Config{Listen: cfg.Admin.Listen, Token: token, Gatherer: reg, Logger: log,
			Devices: pushAdminDevices(s), Switch: switchAdmin{sw: s.sw},
			Ready: func() bool { return ready.Load() && s.component.Connected() }})
		if err != nil {
			return err
		}
		n++
		go func() { errc <- srv.Serve(ctx) }()
	}
	go func() { errc <- s.component.Run(ctx) }()
	ready.Store(true)
	if started != nil {
		started(s)
	}
	log.Info("pushd component running", "domain", cfg.Push.Domain, "router", cfg.Push.Router, "version", version)
	var first error
	for range n {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// startInProcessPush is the `pushd serve` half: the component linked to the
// built-in router over a net.Pipe through the same XEP-0114 code path.
// serveConn is (*router.Server).ServeComponentConn; the router must accept
// domain with secret (add them to its ComponentSecrets). The returned run
// function keeps the link up until ctx ends.
func startInProcessPush(cfg pushFileConfig, db *store.DB, domain, secret string, serveConn func(net.Conn),
	opts pushOptions) (*pushStack, func(ctx context.Context) error, error) {
	dial := func(ctx context.Context) (net.Conn, error) {
		a, b := net.Pipe()
		go serveConn(b)
		return a, nil
	}
	opts.Domain, opts.Secret, opts.Dial = domain, secret, dial
	s, err := startPush(cfg, db, opts)
	if err != nil {
		return nil, nil, err
	}
	return s, s.component.Run, nil
}

// pushDomainAndSecret returns the component JID and link secret `pushd
// serve` uses: [push] domain (default push.<domain>) and [push] secret (a
// random one when empty: the link never leaves the process).
func pushDomainAndSecret(cfg pushFileConfig, domain string) (string, string) {
	d := cfg.Push.Domain
	if d == "" {
		d = "push." + domain
	}
	sec := cfg.Push.Secret
	if sec == "" {
		sec = randomSecret()
	}
	return strings.ToLower(d), sec
}

func randomSecret() string {
	return rand.Text()
}
