// Package apnstest is an in-tree APNS provider API server for tests: HTTP/2
// over TLS, Apple's real path (POST /3/device/<token>), headers, status codes
// and JSON error bodies. It records every request and answers from a script
// per device token, so tests can say "503 then 200" or "410 Unregistered".
//
// It is test-only: nothing outside _test files and test helpers may import
// it. It must never reach the network beyond its own loopback listener.
package apnstest

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Reasons Apple returns, as used by the script and the built-in checks.
const (
	ReasonBadDeviceToken         = "BadDeviceToken"
	ReasonDeviceTokenNotForTopic = "DeviceTokenNotForTopic"
	ReasonUnregistered           = "Unregistered"
	ReasonTooManyRequests        = "TooManyRequests"
	ReasonInternalServerError    = "InternalServerError"
	ReasonServiceUnavailable     = "ServiceUnavailable"
	ReasonMissingTopic           = "MissingTopic"
	ReasonBadPriority            = "BadPriority"
	ReasonBadExpirationDate      = "BadExpirationDate"
	ReasonBadMessageID           = "BadMessageId"
	ReasonBadCollapseID          = "BadCollapseId"
	ReasonInvalidPushType        = "InvalidPushType"
	ReasonPayloadTooLarge        = "PayloadTooLarge"
	ReasonMissingProviderToken   = "MissingProviderToken"
	ReasonInvalidProviderToken   = "InvalidProviderToken"
)

// Answer is one scripted reply. The zero Answer is 200.
type Answer struct {
	Status    int           // HTTP status; 0 means 200
	Reason    string        // APNS reason for non-200
	Timestamp int64         // Unix ms, sent with 410 as Apple does
	Delay     time.Duration // wait before answering (or until the client gives up)
}

// Convenience answers for the statuses tests need.
var (
	OK                     = Answer{Status: http.StatusOK}
	BadDeviceToken         = Answer{Status: http.StatusBadRequest, Reason: ReasonBadDeviceToken}
	DeviceTokenNotForTopic = Answer{Status: http.StatusBadRequest, Reason: ReasonDeviceTokenNotForTopic}
	TooManyRequests        = Answer{Status: http.StatusTooManyRequests, Reason: ReasonTooManyRequests}
	InternalServerError    = Answer{Status: http.StatusInternalServerError, Reason: ReasonInternalServerError}
	ServiceUnavailable     = Answer{Status: http.StatusServiceUnavailable, Reason: ReasonServiceUnavailable}
)

// Unregistered is a 410 with the time Apple last saw the token valid.
func Unregistered(at time.Time) Answer {
	return Answer{Status: http.StatusGone, Reason: ReasonUnregistered, Timestamp: at.UnixMilli()}
}

// Request is what the server received, as the test inspects it.
type Request struct {
	Token      string
	Topic      string
	PushType   string
	Priority   string
	Expiration string
	CollapseID string
	ApnsID     string // as sent by the client ("" if none)
	Auth       string // "token", "certificate" or ""
	JWTKeyID   string
	JWTIssuer  string
	Body       []byte
	Proto      string
	RemoteAddr string // distinguishes connections: a fresh connection has a new port
	Status     int    // what was answered
	Reason     string
}

// Server is a running APNS test server. Use URL and Client() (or the
// certificate pool from Certificate()) to point apns2 at it.
type Server struct {
	*httptest.Server

	mu       sync.Mutex
	scripts  map[string][]Answer
	fallback Answer
	reqs     []Request
	seq      int
	notify   chan struct{}

	// TokenKey, when set, makes the server verify JWT signatures with it.
	tokenKey  *ecdsa.PublicKey
	discard   bool
	onRequest func(Request)
	// verified holds the tokens whose signature checked (VerifyOnce).
	verified sync.Map
	once     bool
}

// Options configure NewServer.
type Options struct {
	// TokenKey verifies the ES256 signature of provider tokens when set.
	TokenKey *ecdsa.PublicKey
	// ClientCAs enables certificate auth: a client certificate signed by one
	// of them authenticates a request without a bearer token.
	ClientCAs *x509.CertPool
	// Discard answers requests without keeping them (Requests stays
	// empty): for benchmarks, where hundreds of thousands of kept requests
	// would be live heap that the garbage collector of the process under
	// test marks again on every cycle.
	Discard bool
	// OnRequest, when set, hears every request as it is answered (Discard
	// or not), on the request's goroutine: a bench times arrivals without
	// polling Requests.
	OnRequest func(Request)
	// VerifyOnce checks each distinct provider token's signature once and
	// remembers the good ones, as Apple does for a connection's token: a
	// bench whose server shares the cores with the process under test
	// then spends them on the requests, not on ES256.
	VerifyOnce bool
}

// NewServer starts an HTTP/2 TLS server on loopback.
func NewServer(opts Options) *Server {
	s := &Server{scripts: map[string][]Answer{}, fallback: OK, tokenKey: opts.TokenKey, discard: opts.Discard,
		onRequest: opts.OnRequest, once: opts.VerifyOnce, notify: make(chan struct{}, 1)}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.EnableHTTP2 = true
	if opts.ClientCAs != nil {
		s.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: opts.ClientCAs}
	}
	s.StartTLS()
	return s
}

// Script queues answers for one device token, used in order; once they are
// used up the token gets the fallback answer.
func (s *Server) Script(token string, answers ...Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[token] = append(s.scripts[token], answers...)
}

// SetFallback sets the answer for tokens with no script left (default OK).
func (s *Server) SetFallback(a Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fallback = a
}

// Requests returns a copy of every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// WaitRequests blocks until at least n requests were recorded or timeout
// passes, and returns them.
func (s *Server) WaitRequests(n int, timeout time.Duration) []Request {
	deadline := time.Now().Add(timeout)
	for {
		r := s.Requests()
		if len(r) >= n || time.Now().After(deadline) {
			return r
		}
		select {
		case <-s.notify:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

var (
	hexToken = regexp.MustCompile(`^[0-9a-fA-F]{16,200}$`)
	uuidRe   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if r.Method != http.MethodPost || !ok {
		writeReason(w, http.StatusMethodNotAllowed, "MethodNotAllowed", 0)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	req := Request{
		Token: token, Topic: r.Header.Get("apns-topic"), PushType: r.Header.Get("apns-push-type"),
		Priority: r.Header.Get("apns-priority"), Expiration: r.Header.Get("apns-expiration"),
		CollapseID: r.Header.Get("apns-collapse-id"), ApnsID: r.Header.Get("apns-id"),
		Body: body, Proto: r.Proto, RemoteAddr: r.RemoteAddr,
	}
	ans := s.check(r, &req)
	if ans.Status == 0 {
		ans = s.next(token)
	}
	req.Status, req.Reason = ans.Status, ans.Reason
	if ans.Status == 0 {
		req.Status = http.StatusOK
	}
	s.record(req)
	if ans.Delay > 0 {
		select {
		case <-time.After(ans.Delay):
		case <-r.Context().Done():
			return
		}
	}
	id := req.ApnsID
	if id == "" {
		s.mu.Lock()
		s.seq++
		id = fmt.Sprintf("00000000-0000-4000-8000-%012d", s.seq)
		s.mu.Unlock()
	}
	w.Header().Set("apns-id", id)
	if req.Status == http.StatusOK {
		w.WriteHeader(http.StatusOK)
		return
	}
	writeReason(w, req.Status, ans.Reason, ans.Timestamp)
}

// check applies Apple's request validation; a non-zero Status is a rejection.
func (s *Server) check(r *http.Request, req *Request) Answer {
	bad := func(status int, reason string) Answer { return Answer{Status: status, Reason: reason} }
	if auth := r.Header.Get("authorization"); auth != "" {
		req.Auth = "token"
		kid, iss, err := s.checkJWT(auth)
		req.JWTKeyID, req.JWTIssuer = kid, iss
		if err != nil {
			return bad(http.StatusForbidden, ReasonInvalidProviderToken)
		}
	} else if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		req.Auth = "certificate"
	} else {
		return bad(http.StatusForbidden, ReasonMissingProviderToken)
	}
	switch {
	case r.ProtoMajor != 2:
		return bad(http.StatusBadRequest, "BadPath")
	case !hexToken.MatchString(req.Token):
		return bad(http.StatusBadRequest, ReasonBadDeviceToken)
	case req.Topic == "" && req.Auth == "token":
		return bad(http.StatusBadRequest, ReasonMissingTopic)
	case req.PushType != "alert" && req.PushType != "background" && req.PushType != "voip" &&
		req.PushType != "complication" && req.PushType != "fileprovider" && req.PushType != "mdm" &&
		req.PushType != "location" && req.PushType != "liveactivity" && req.PushType != "pushtotalk":
		return bad(http.StatusBadRequest, ReasonInvalidPushType)
	case req.PushType == "voip" && !strings.HasSuffix(req.Topic, ".voip"):
		return bad(http.StatusBadRequest, ReasonDeviceTokenNotForTopic)
	case req.Priority != "" && req.Priority != "10" && req.Priority != "5" && req.Priority != "1":
		return bad(http.StatusBadRequest, ReasonBadPriority)
	case req.PushType == "background" && (req.Priority == "" || req.Priority == "10"):
		// Apple: priority 10 (also the default) is an error for a
		// background push.
		return bad(http.StatusBadRequest, ReasonBadPriority)
	case req.ApnsID != "" && !uuidRe.MatchString(req.ApnsID):
		return bad(http.StatusBadRequest, ReasonBadMessageID)
	case len(req.CollapseID) > 64:
		return bad(http.StatusBadRequest, ReasonBadCollapseID)
	}
	if req.Expiration != "" {
		if _, err := strconv.ParseInt(req.Expiration, 10, 64); err != nil {
			return bad(http.StatusBadRequest, ReasonBadExpirationDate)
		}
	}
	limit := 4096
	if req.PushType == "voip" {
		limit = 5120
	}
	if len(req.Body) > limit {
		return bad(http.StatusRequestEntityTooLarge, ReasonPayloadTooLarge)
	}
	if !json.Valid(req.Body) {
		return bad(http.StatusBadRequest, "PayloadEmpty")
	}
	return Answer{}
}

// checkJWT parses "bearer <jwt>" and checks the ES256 header with kid and the
// iss/iat claims Apple requires; with a TokenKey it verifies the signature.
func (s *Server) checkJWT(auth string) (kid, iss string, err error) {
	tok, ok := strings.CutPrefix(auth, "bearer ")
	if !ok {
		return "", "", fmt.Errorf("not a bearer token")
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", "", fmt.Errorf("jwt: %d parts", len(parts))
	}
	var hdr struct{ Alg, Kid string }
	var claims struct {
		Iss string
		Iat int64
	}
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return "", "", err
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return "", "", err
	}
	if hdr.Alg != "ES256" || hdr.Kid == "" || claims.Iss == "" || claims.Iat == 0 {
		return hdr.Kid, claims.Iss, fmt.Errorf("jwt: alg %q kid %q iss %q iat %d", hdr.Alg, hdr.Kid, claims.Iss, claims.Iat)
	}
	if _, ok := s.verified.Load(tok); s.tokenKey != nil && !ok {
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil || len(sig) != 64 {
			return hdr.Kid, claims.Iss, fmt.Errorf("jwt: signature encoding")
		}
		h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		r, sv := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(s.tokenKey, h[:], r, sv) {
			return hdr.Kid, claims.Iss, fmt.Errorf("jwt: bad signature")
		}
		if s.once {
			s.verified.Store(tok, true)
		}
	}
	return hdr.Kid, claims.Iss, nil
}

func decodeSegment(seg string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return fmt.Errorf("jwt: segment: %w", err)
	}
	return json.Unmarshal(raw, v)
}

func (s *Server) next(token string) Answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.scripts[token]
	if len(q) == 0 {
		return s.fallback
	}
	s.scripts[token] = q[1:]
	return q[0]
}

func (s *Server) record(r Request) {
	if s.onRequest != nil {
		s.onRequest(r)
	}
	if s.discard {
		return
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, r)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func writeReason(w http.ResponseWriter, status int, reason string, ts int64) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	body := map[string]any{"reason": reason}
	if ts != 0 {
		body["timestamp"] = ts
	}
	_ = json.NewEncoder(w).Encode(body)
}
