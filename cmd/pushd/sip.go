package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pushd/component/dispatch"
	"pushd/component/sip"
)

// sipSection is [sip]: the RFC 8599 registrar and holding proxy. An empty
// listen turns SIP off.
type sipSection struct {
	Listen            string   `toml:"listen"`
	TLSListen         string   `toml:"tls_listen"`
	Domain            string   `toml:"domain"`
	Advertise         string   `toml:"advertise"`
	RingAfter         duration `toml:"ring_after"`
	GiveUpAfter       duration `toml:"give_up_after"`
	RefreshPushBefore duration `toml:"refresh_push_before"`
	Trusted           []string `toml:"trusted"`
	MaxMessageBytes   int      `toml:"max_message_bytes"`
	RateLimit         float64  `toml:"rate_limit"`
	RateBurst         float64  `toml:"rate_burst"`
	DigestAlgorithms  []string `toml:"digest_algorithms"`
}

func defaultSIPSection() sipSection {
	d := sip.DefaultConfig()
	return sipSection{
		Listen: d.Listen, RingAfter: duration(d.RingAfter), GiveUpAfter: duration(d.GiveUpAfter),
		RefreshPushBefore: duration(d.RefreshPushBefore), MaxMessageBytes: d.MaxMessageBytes,
		RateLimit: d.RequestRate, RateBurst: d.RequestBurst, DigestAlgorithms: []string{"SHA-256", "MD5"},
	}
}

func (s sipSection) validate() error {
	if s.Listen == "" {
		return nil
	}
	if _, err := s.trusted(); err != nil {
		return err
	}
	for _, a := range s.DigestAlgorithms {
		if a != "SHA-256" && a != "MD5" {
			return fmt.Errorf("config: sip.digest_algorithms: %q is neither \"SHA-256\" nor \"MD5\"", a)
		}
	}
	if s.GiveUpAfter > 0 && s.RingAfter > 0 && s.GiveUpAfter <= s.RingAfter {
		return fmt.Errorf("config: sip.give_up_after (%s) must be longer than sip.ring_after (%s)",
			time.Duration(s.GiveUpAfter), time.Duration(s.RingAfter))
	}
	return nil
}

func (s sipSection) trusted() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, t := range s.Trusted {
		p, err := netip.ParsePrefix(t)
		if err != nil {
			a, aerr := netip.ParseAddr(t)
			if aerr != nil {
				return nil, fmt.Errorf("config: sip.trusted %q: %w", t, err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p)
	}
	return out, nil
}

// startSIP builds the node's SIP server (nil when [sip] listen is empty)
// on the node's accounts, database and dispatcher.
func (n *node) startSIP(reg prometheus.Registerer) error {
	sc := n.cfg.SIP
	if sc.Listen == "" {
		return nil
	}
	cfg := sip.DefaultConfig()
	cfg.Listen, cfg.TLSListen, cfg.Advertise = sc.Listen, sc.TLSListen, reachable(sipAdvertised(n.cfg))
	cfg.Domain = sc.Domain
	if cfg.Domain == "" {
		cfg.Domain = n.cfg.Domain
	}
	cfg.RingAfter, cfg.GiveUpAfter = time.Duration(sc.RingAfter), time.Duration(sc.GiveUpAfter)
	cfg.RefreshPushBefore = time.Duration(sc.RefreshPushBefore)
	cfg.MaxMessageBytes, cfg.RequestRate, cfg.RequestBurst = sc.MaxMessageBytes, sc.RateLimit, sc.RateBurst
	cfg.Trusted, _ = sc.trusted() // validated at load
	cfg.DigestAlgorithms = sc.DigestAlgorithms
	if n.cfg.Cluster.SecretKey != "" {
		// Every node accepts the nonces of the others: a phone may
		// register anywhere.
		cfg.DigestKey = []byte("pushd sip digest\x00" + n.cfg.Cluster.SecretKey)
	}
	cfg.TLS = n.tls
	cfg.Logger = n.log
	if n.cfg.sipClock != nil {
		cfg.Now = n.cfg.sipClock
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pushd_sip_bindings", Help: "SIP bindings held (every node holds every binding of its cluster).",
	}, func() float64 { return float64(n.sipReg.Count()) }))
	deps := sip.Deps{Registrar: n.sipReg, Accounts: n.db.Accounts(), Metrics: sip.NewMetrics(reg),
		InCall: n.inCalls.changed}
	if n.push != nil {
		deps.Pusher = n.push.dispatcher
		deps.Devices = n.push.registry
		cfg.Providers = n.push.providers()
	}
	if n.cluster != nil {
		cfg.Placement = n.cluster.sipPlacement
		n.sipReg.OnChange(n.cluster.bindingChanged)
	}
	var err error
	n.sip, err = sip.New(cfg, deps)
	if err != nil {
		return err
	}
	if n.push != nil {
		n.push.dispatcher.Route(sip.RegistrationOwner, n.sip)
	}
	if err := n.sip.Listen(); err != nil {
		n.sip = nil
		return err
	}
	n.sipServer.Store(n.sip)
	return nil
}

// sipAdvertised is where phones reach this node's SIP listener.
func sipAdvertised(cfg fileConfig) string {
	if a := cfg.SIP.Advertise; a != "" {
		return a
	}
	return cfg.SIP.Listen
}

// providers lists the push providers the stack can send through, for
// RFC 8599's pn-provider.
func (s *pushStack) providers() []dispatch.ProviderName {
	out := slices.Clone(s.names)
	slices.Sort(out)
	return out
}

func sipAddrs(s *sip.Server) string {
	if s == nil {
		return ""
	}
	return strings.TrimSpace(s.Addr("udp") + " " + s.Addr("tls"))
}
