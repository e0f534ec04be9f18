// Package apns is the APNS provider of component/dispatch: it turns a
// dispatch.Push into one HTTP/2 request with github.com/sideshow/apns2
// (token .p8 or certificate auth, per-channel push type, priority,
// expiration and collapse id; reg-refresh pushes as background pushes) and
// classifies Apple's answer into a
// dispatch.Outcome.
//
// It owns nothing else: no retries, no persistence, no logging — the
// dispatcher does those once for every provider. It must never put the
// device token or payload into an error text (errors reach logs).
package apns

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/certificate"
	"github.com/sideshow/apns2/token"

	"pushd/component/dispatch"
	"pushd/component/httpx"
	"pushd/component/payload"
)

// Auth methods.
const (
	AuthToken       = "token"
	AuthCertificate = "certificate"
)

// Channel is the per-channel request shape.
type Channel struct {
	// PushType is the apns-push-type header.
	PushType apns2.EPushType
	// Priority is apns-priority: 10 delivers at once, 5 saves power.
	Priority int
	// Expiration: Apple keeps an undelivered push this long. 0 sends no
	// header (apns2 cannot send "0"); Apple then applies its own policy.
	Expiration time.Duration
	// CollapseID makes newer pushes replace older ones on the device ("" none).
	CollapseID string
	// TopicSuffix is appended to Config.Topic (".voip" for PushKit).
	TopicSuffix string
}

// Config configures the provider. Start from DefaultConfig.
type Config struct {
	// Endpoint is the APNS base URL. Default apns2.HostProduction.
	Endpoint string
	// Topic is the app's bundle id.
	Topic string
	// Auth is AuthToken (a .p8 key) or AuthCertificate.
	Auth string
	// Token auth: the .p8 key as a file or as PEM bytes, its key id and the
	// team id.
	KeyFile string
	KeyPEM  []byte
	KeyID   string
	TeamID  string
	// Certificate auth: a .p12 or .pem file (by extension) and its password,
	// or a loaded certificate.
	CertFile     string
	CertPassword string
	Certificate  *tls.Certificate
	// Message and VoIP shape the two channels.
	Message Channel
	VoIP    Channel
	// Background shapes the pushes that wake the app without showing
	// anything (payload.TypeRegRefresh: refresh the SIP registration,
	// C8). They go to the message channel's token; Apple requires push
	// type background and priority 5 for them.
	Background Channel
	// HTTP is the transport: proxy, extra CA, connect timeout (P4).
	HTTP httpx.Config
}

// DefaultConfig returns the P2 defaults: message channel alert/10 with a
// one-day expiration (a summary older than M10's resume timeout is useless)
// collapsed under "pushd-message" so the device shows the latest summary;
// VoIP channel voip/10 expiring after 30 s (a call push after the ring
// timeout only confuses), never collapsed (each call is its own);
// background/5 expiring after 1 h (a refresh that comes late still brings
// the phone's binding back; by then the app has run and registered by
// itself), not collapsed (nothing is shown, and a collapse id shared with
// the message channel would replace a summary).
func DefaultConfig() Config {
	return Config{
		Endpoint:   apns2.HostProduction,
		Auth:       AuthToken,
		Message:    Channel{PushType: apns2.PushTypeAlert, Priority: apns2.PriorityHigh, Expiration: 24 * time.Hour, CollapseID: "pushd-message"},
		VoIP:       Channel{PushType: apns2.PushTypeVOIP, Priority: apns2.PriorityHigh, Expiration: 30 * time.Second, TopicSuffix: ".voip"},
		Background: Channel{PushType: apns2.PushTypeBackground, Priority: apns2.PriorityLow, Expiration: time.Hour},
		HTTP:       httpx.DefaultConfig(),
	}
}

// Provider sends pushes to APNS. Safe for concurrent use.
type Provider struct {
	cfg     Config
	factory *httpx.Factory
	tok     *token.Token
	now     func() time.Time

	mu     sync.Mutex
	client *apns2.Client
}

// New validates cfg, loads the credentials and builds the first client.
func New(cfg Config) (*Provider, error) {
	if cfg.Endpoint == "" {
		cfg.Endpoint = apns2.HostProduction
	}
	if cfg.Topic == "" {
		return nil, errors.New("apns: topic (bundle id) is required")
	}
	p := &Provider{cfg: cfg, now: time.Now}
	switch cfg.Auth {
	case AuthToken, "":
		key, err := loadKey(cfg)
		if err != nil {
			return nil, err
		}
		if cfg.KeyID == "" || cfg.TeamID == "" {
			return nil, errors.New("apns: token auth needs key_id and team_id")
		}
		p.tok = &token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID}
		// apns2 would send an empty bearer if signing failed; fail now instead.
		if _, err := p.tok.Generate(); err != nil {
			return nil, fmt.Errorf("apns: sign provider token: %w", err)
		}
	case AuthCertificate:
		cert, err := loadCert(cfg)
		if err != nil {
			return nil, err
		}
		cfg.HTTP.Certificates = append(cfg.HTTP.Certificates, cert)
	default:
		return nil, fmt.Errorf("apns: auth %q: want token or certificate", cfg.Auth)
	}
	f, err := httpx.NewFactory(cfg.HTTP)
	if err != nil {
		return nil, fmt.Errorf("apns: %w", err)
	}
	p.factory = f
	p.client = p.newClient()
	return p, nil
}

func loadKey(cfg Config) (*ecdsa.PrivateKey, error) {
	var (
		key *ecdsa.PrivateKey
		err error
	)
	switch {
	case len(cfg.KeyPEM) > 0:
		key, err = token.AuthKeyFromBytes(cfg.KeyPEM)
	case cfg.KeyFile != "":
		key, err = token.AuthKeyFromFile(cfg.KeyFile)
	default:
		return nil, errors.New("apns: token auth needs key_file")
	}
	if err != nil {
		return nil, fmt.Errorf("apns: auth key: %w", err)
	}
	if key == nil {
		return nil, errors.New("apns: auth key: empty")
	}
	return key, nil
}

func loadCert(cfg Config) (tls.Certificate, error) {
	if cfg.Certificate != nil {
		return *cfg.Certificate, nil
	}
	var (
		c   tls.Certificate
		err error
	)
	switch {
	case cfg.CertFile == "":
		return c, errors.New("apns: certificate auth needs cert_file")
	case strings.HasSuffix(strings.ToLower(cfg.CertFile), ".p12"):
		c, err = certificate.FromP12File(cfg.CertFile, cfg.CertPassword)
	default:
		c, err = certificate.FromPemFile(cfg.CertFile, cfg.CertPassword)
	}
	if err != nil {
		return c, fmt.Errorf("apns: certificate: %w", err)
	}
	return c, nil
}

func (p *Provider) newClient() *apns2.Client {
	c := &apns2.Client{
		Host:       strings.TrimSuffix(p.cfg.Endpoint, "/"),
		HTTPClient: &http.Client{Transport: p.factory.Transport()},
		Token:      p.tok,
	}
	if len(p.cfg.HTTP.Certificates) > 0 {
		c.Certificate = p.cfg.HTTP.Certificates[0]
	}
	return c
}

func (p *Provider) current() *apns2.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.client
}

// Reset replaces the client with one on a fresh transport (new
// connections, next address first) and lets the old one's idle
// connections go; requests in flight on it finish.
func (p *Provider) Reset() {
	p.mu.Lock()
	old := p.client
	p.factory.Dialer().Rotate()
	p.client = p.newClient()
	p.mu.Unlock()
	old.CloseIdleConnections()
}

// Close releases idle connections.
func (p *Provider) Close() { p.current().CloseIdleConnections() }

// isUUID reports whether s is a lower-case UUID (8-4-4-4-12 hex digits),
// the form apns-id takes. A loop, not a regexp: it runs for every push.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// Notification builds the apns2 request for push (exported for tests and
// for `pushd push test`).
func (p *Provider) Notification(push dispatch.Push) (*apns2.Notification, error) {
	ch := p.cfg.Message
	switch {
	case push.Channel == payload.ChannelVoIP:
		ch = p.cfg.VoIP
	case push.Sealed.Type == payload.TypeRegRefresh:
		ch = p.cfg.Background
	}
	body, err := payload.APNSBody(push.Channel, push.TrackingID, push.Sealed)
	if err != nil {
		return nil, fmt.Errorf("apns: %w", err)
	}
	topic := p.cfg.Topic
	if push.Registration.Topic != "" {
		topic = push.Registration.Topic
	}
	n := &apns2.Notification{
		DeviceToken: push.DeviceToken(),
		Topic:       topic + ch.TopicSuffix,
		PushType:    ch.PushType,
		Priority:    ch.Priority,
		CollapseID:  ch.CollapseID,
		Payload:     body,
	}
	if ch.Expiration > 0 {
		n.Expiration = p.now().Add(ch.Expiration)
	}
	if isUUID(push.TrackingID) {
		n.ApnsID = push.TrackingID // Apple echoes it: the tracking id on both sides
	}
	return n, nil
}

// Send makes one attempt.
func (p *Provider) Send(ctx context.Context, push dispatch.Push) dispatch.Outcome {
	n, err := p.Notification(push)
	if err != nil {
		return dispatch.Outcome{Result: dispatch.Fatal, Err: err}
	}
	resp, err := p.current().PushWithContext(ctx, n)
	return Classify(resp, err)
}

// Classify maps Apple's answer to an outcome (P3): 200 delivered; 410, and
// 400 BadDeviceToken / DeviceTokenNotForTopic dead; 429, 5xx and transport
// errors retry; any other rejection fatal.
func Classify(resp *apns2.Response, err error) dispatch.Outcome {
	if err != nil {
		return dispatch.Outcome{Result: dispatch.Retry, Err: scrub(err)}
	}
	o := dispatch.Outcome{Status: resp.StatusCode, Reason: resp.Reason}
	switch {
	case resp.StatusCode == http.StatusOK:
		o.Result = dispatch.Delivered
	case resp.StatusCode == http.StatusGone,
		resp.Reason == apns2.ReasonBadDeviceToken,
		resp.Reason == apns2.ReasonDeviceTokenNotForTopic:
		o.Result = dispatch.Dead
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		o.Result = dispatch.Retry
	default:
		o.Result = dispatch.Fatal
	}
	return o
}

// scrub drops the request URL (it holds the device token) from a transport
// error, keeping the cause for errors.Is.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("apns: %s: %w", ue.Op, ue.Err)
	}
	return fmt.Errorf("apns: %w", err)
}
