// Package fcm is the FCM provider of component/dispatch: it sends a
// dispatch.Push as one high-priority, data-only FCM HTTP v1 message with
// firebase.google.com/go/v4/messaging and classifies the answer into a
// dispatch.Outcome.
//
// The Firebase SDK is heavy (gRPC, OpenTelemetry, cloud auth); this package
// keeps it behind one small type. It does no retries of its own beyond what
// the SDK does (the SDK retries 503 and network errors inside one Send,
// bounded by the dispatcher's per-attempt timeout), no logging and no
// persistence, and never puts a token or payload in an error.
package fcm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"

	"pushd/component/dispatch"
	"pushd/component/httpx"
	"pushd/component/payload"
)

// scopeMessaging is the OAuth scope for FCM HTTP v1.
const scopeMessaging = "https://www.googleapis.com/auth/firebase.messaging"

// Config configures the provider. Start from DefaultConfig.
type Config struct {
	// Endpoint is the FCM base URL, without "/v1". Default
	// https://fcm.googleapis.com.
	Endpoint string
	// ProjectID is the Firebase project. Required.
	ProjectID string
	// CredentialsFile is a service account JSON file. Ignored when
	// TokenSource is set.
	CredentialsFile string
	// TokenSource supplies OAuth access tokens (tests, or workload identity).
	TokenSource oauth2.TokenSource
	// TTL is how long FCM keeps an undelivered message. Default 24 h, like
	// the APNS message channel.
	TTL time.Duration
	// CollapseKey for message pushes: an offline device gets only the
	// latest summary. Calls and reg-refreshes are never collapsed. Default
	// "pushd-message".
	CollapseKey string
	// HTTP is the transport: proxy, extra CA, connect timeout (P4).
	HTTP httpx.Config
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Endpoint:    "https://fcm.googleapis.com",
		TTL:         24 * time.Hour,
		CollapseKey: "pushd-message",
		HTTP:        httpx.DefaultConfig(),
	}
}

// Provider sends pushes to FCM. Safe for concurrent use.
type Provider struct {
	cfg     Config
	factory *httpx.Factory
	ts      oauth2.TokenSource

	mu     sync.Mutex
	client *messaging.Client
	tr     *http.Transport
}

// New validates cfg, loads the credentials and builds the first client.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if cfg.ProjectID == "" {
		return nil, errors.New("fcm: project_id is required")
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = DefaultConfig().Endpoint
	}
	f, err := httpx.NewFactory(cfg.HTTP)
	if err != nil {
		return nil, fmt.Errorf("fcm: %w", err)
	}
	p := &Provider{cfg: cfg, factory: f, ts: cfg.TokenSource}
	if p.ts == nil {
		if cfg.CredentialsFile == "" {
			return nil, errors.New("fcm: credentials_file is required")
		}
		data, err := os.ReadFile(cfg.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("fcm: credentials: %w", err)
		}
		// The token exchange goes through the same proxy as the pushes.
		tctx := context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Transport: f.Transport()})
		creds, err := google.CredentialsFromJSON(tctx, data, scopeMessaging)
		if err != nil {
			return nil, fmt.Errorf("fcm: credentials: %w", err)
		}
		p.ts = creds.TokenSource
	}
	client, tr, err := p.newClient(ctx)
	if err != nil {
		return nil, err
	}
	p.client, p.tr = client, tr
	return p, nil
}

// newClient builds a messaging client on a fresh transport. The OAuth
// bearer is added by our own oauth2.Transport because option.WithHTTPClient
// makes the SDK use the client as is.
func (p *Provider) newClient(ctx context.Context) (*messaging.Client, *http.Transport, error) {
	tr := p.factory.Transport()
	hc := &http.Client{Transport: &oauth2.Transport{Source: p.ts, Base: tr}}
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: p.cfg.ProjectID},
		option.WithHTTPClient(hc), option.WithEndpoint(strings.TrimSuffix(p.cfg.Endpoint, "/")+"/v1"))
	if err != nil {
		return nil, nil, fmt.Errorf("fcm: app: %w", err)
	}
	c, err := app.Messaging(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("fcm: messaging: %w", err)
	}
	return c, tr, nil
}

func (p *Provider) current() *messaging.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.client
}

// Reset swaps in a client on a fresh transport (new connections, next
// address first); requests in flight on the old one finish.
func (p *Provider) Reset() {
	p.factory.Dialer().Rotate()
	client, tr, err := p.newClient(context.Background())
	if err != nil {
		return // keep the old client: building one only fails on bad config, checked in New
	}
	p.mu.Lock()
	old := p.tr
	p.client, p.tr = client, tr
	p.mu.Unlock()
	old.CloseIdleConnections()
}

// Close releases idle connections.
func (p *Provider) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tr.CloseIdleConnections()
}

// Message builds the FCM message for push: data-only (the app decrypts and
// builds its own notification), android priority high so a dozing device
// wakes (P2). Only message summaries are collapsed: each call is its own,
// and a reg-refresh (a data message like the others, C8) must not replace
// a summary waiting for an offline device.
func (p *Provider) Message(push dispatch.Push) *messaging.Message {
	ttl := p.cfg.TTL
	a := &messaging.AndroidConfig{Priority: "high", TTL: &ttl}
	if push.Sealed.Type == payload.TypeMessage {
		a.CollapseKey = p.cfg.CollapseKey
	}
	return &messaging.Message{
		Token:   push.Registration.Token,
		Data:    payload.FCMData(push.TrackingID, push.Sealed),
		Android: a,
	}
}

// Send makes one attempt.
func (p *Provider) Send(ctx context.Context, push dispatch.Push) dispatch.Outcome {
	_, err := p.current().Send(ctx, p.Message(push))
	return Classify(err)
}

// Classify maps the SDK's answer to an outcome (P3). It must see the SDK's
// error unwrapped: messaging.IsUnregistered and friends type-assert.
//   - UNREGISTERED (404) → dead;
//   - INVALID_ARGUMENT about the registration token → dead (any other
//     INVALID_ARGUMENT is our request's fault → fatal);
//   - QUOTA_EXCEEDED (429), INTERNAL (500), UNAVAILABLE (503), other 5xx,
//     timeouts and connection errors → retry;
//   - anything else (401, 403 SENDER_ID_MISMATCH, …) → fatal.
func Classify(err error) dispatch.Outcome {
	if err == nil {
		return dispatch.Outcome{Result: dispatch.Delivered, Status: http.StatusOK}
	}
	o := dispatch.Outcome{Err: scrub(err)}
	resp := errorutils.HTTPResponse(err)
	if resp != nil {
		o.Status = resp.StatusCode
	}
	switch {
	case messaging.IsUnregistered(err):
		o.Result, o.Reason = dispatch.Dead, "UNREGISTERED"
	case messaging.IsInvalidArgument(err):
		o.Reason = "INVALID_ARGUMENT"
		o.Result = dispatch.Fatal
		if strings.Contains(strings.ToLower(err.Error()), "registration token") {
			o.Result = dispatch.Dead
		}
	case messaging.IsQuotaExceeded(err):
		o.Result, o.Reason = dispatch.Retry, "QUOTA_EXCEEDED"
	case messaging.IsInternal(err):
		o.Result, o.Reason = dispatch.Retry, "INTERNAL"
	case messaging.IsUnavailable(err):
		o.Result, o.Reason = dispatch.Retry, "UNAVAILABLE"
	case messaging.IsSenderIDMismatch(err):
		o.Result, o.Reason = dispatch.Fatal, "SENDER_ID_MISMATCH"
	case resp == nil, o.Status == http.StatusTooManyRequests, o.Status >= 500:
		// No HTTP answer at all (timeout, refused, reset) or an overload.
		o.Result = dispatch.Retry
	default:
		o.Result = dispatch.Fatal
	}
	return o
}

func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("fcm: %s: %w", ue.Op, ue.Err)
	}
	return fmt.Errorf("fcm: %w", err)
}
