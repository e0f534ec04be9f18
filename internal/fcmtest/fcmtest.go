// Package fcmtest is an in-tree FCM HTTP v1 server for tests: HTTP/2 over
// TLS, Google's real path (POST /v1/projects/<id>/messages:send), OAuth
// bearer check, the message body and Google's JSON error format with the
// FcmError details the Firebase Admin SDK classifies. It records every
// request and answers from a script per registration token. It can also be
// the OAuth token endpoint of a service account it makes (ServiceAccount),
// so that a client configured with a credentials file runs Google's whole
// flow against it.
//
// It is test-only and must never reach the network beyond its own loopback
// listener.
package fcmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// FCM error codes (google.firebase.fcm.v1.FcmError.errorCode).
const (
	Unregistered     = "UNREGISTERED"
	InvalidArgument  = "INVALID_ARGUMENT"
	QuotaExceeded    = "QUOTA_EXCEEDED"
	Internal         = "INTERNAL"
	Unavailable      = "UNAVAILABLE"
	SenderIDMismatch = "SENDER_ID_MISMATCH"
)

// Answer is one scripted reply. The zero Answer is success.
type Answer struct {
	ErrorCode string        // "" for success, else an FcmError code above
	Delay     time.Duration // wait before answering (or until the client gives up)
}

// errorShape maps an FcmError code to the HTTP status and google.rpc status
// FCM sends with it.
var errorShape = map[string]struct {
	status int
	rpc    string
	msg    string
}{
	Unregistered:     {http.StatusNotFound, "NOT_FOUND", "Requested entity was not found."},
	InvalidArgument:  {http.StatusBadRequest, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token"},
	QuotaExceeded:    {http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric"},
	Internal:         {http.StatusInternalServerError, "INTERNAL", "Internal error encountered."},
	Unavailable:      {http.StatusServiceUnavailable, "UNAVAILABLE", "The service is currently unavailable."},
	SenderIDMismatch: {http.StatusForbidden, "PERMISSION_DENIED", "SenderId mismatch"},
}

// Request is what the server received.
type Request struct {
	Project    string
	Auth       string // the bearer token
	Token      string
	Data       map[string]string
	Priority   string // android.priority
	HasNotify  bool   // a notification block was present (pushd never sends one)
	Body       []byte
	Proto      string
	RemoteAddr string
	Status     int
	ErrorCode  string
}

// Server is a running FCM test server. Point the Admin SDK at URL+"/v1".
type Server struct {
	*httptest.Server

	mu sync.Mutex
	// bearer is the OAuth access token the server accepts ("" accepts
	// any); account, when set, is the service account it mints it for.
	bearer   string
	account  *serviceAccount
	grants   int
	notify   chan struct{}
	scripts  map[string][]Answer
	fallback Answer
	reqs     []Request
	seq      int
}

// NewServer starts an HTTP/2 TLS server on loopback accepting bearer
// (any non-empty bearer when it is "").
func NewServer(bearer string) *Server {
	s := &Server{bearer: bearer, scripts: map[string][]Answer{}, notify: make(chan struct{}, 1)}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.EnableHTTP2 = true
	s.StartTLS()
	return s
}

// Script queues answers for one registration token; then the fallback.
func (s *Server) Script(token string, answers ...Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[token] = append(s.scripts[token], answers...)
}

// SetFallback sets the answer for tokens with no script left (default success).
func (s *Server) SetFallback(a Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fallback = a
}

// Requests returns a copy of every request received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// WaitRequests waits until at least n requests were received or timeout
// passed, and returns them.
func (s *Server) WaitRequests(n int, timeout time.Duration) []Request {
	deadline := time.After(timeout)
	for {
		if r := s.Requests(); len(r) >= n {
			return r
		}
		select {
		case <-s.notify:
		case <-time.After(10 * time.Millisecond): // another waiter took the notice
		case <-deadline:
			return s.Requests()
		}
	}
}

type sendBody struct {
	ValidateOnly bool `json:"validate_only"`
	Message      *struct {
		Token        string            `json:"token"`
		Topic        string            `json:"topic"`
		Condition    string            `json:"condition"`
		Data         map[string]string `json:"data"`
		Notification json.RawMessage   `json:"notification"`
		Android      *struct {
			Priority string `json:"priority"`
		} `json:"android"`
	} `json:"message"`
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == TokenPath {
		s.token(w, r)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/projects/")
	project, ok2 := strings.CutSuffix(rest, "/messages:send")
	if r.Method != http.MethodPost || !ok || !ok2 || project == "" || strings.Contains(project, "/") {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "not found", "")
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	req := Request{Project: project, Body: body, Proto: r.Proto, RemoteAddr: r.RemoteAddr}
	req.Auth, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	var ans Answer
	var sb sendBody
	s.mu.Lock()
	bearer := s.bearer
	s.mu.Unlock()
	switch {
	case req.Auth == "" || (bearer != "" && req.Auth != bearer):
		s.finish(w, req, http.StatusUnauthorized, "UNAUTHENTICATED", "Request had invalid authentication credentials.", "")
		return
	case json.Unmarshal(body, &sb) != nil || sb.Message == nil:
		s.finish(w, req, http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid JSON payload received.", InvalidArgument)
		return
	}
	m := sb.Message
	req.Token, req.Data, req.HasNotify = m.Token, m.Data, len(m.Notification) > 0
	if m.Android != nil {
		req.Priority = m.Android.Priority
	}
	if m.Token == "" || m.Topic != "" || m.Condition != "" {
		s.finish(w, req, http.StatusBadRequest, "INVALID_ARGUMENT", "Exactly one of token, topic or condition must be set.", InvalidArgument)
		return
	}
	ans = s.next(m.Token)
	if ans.Delay > 0 {
		select {
		case <-time.After(ans.Delay):
		case <-r.Context().Done():
			s.record(req)
			return
		}
	}
	if ans.ErrorCode != "" {
		shape, ok := errorShape[ans.ErrorCode]
		if !ok {
			shape = errorShape[Internal]
		}
		s.finish(w, req, shape.status, shape.rpc, shape.msg, ans.ErrorCode)
		return
	}
	s.mu.Lock()
	s.seq++
	name := fmt.Sprintf("projects/%s/messages/%d", project, s.seq)
	s.mu.Unlock()
	req.Status = http.StatusOK
	s.record(req)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	_ = json.NewEncoder(w).Encode(map[string]string{"name": name})
}

func (s *Server) finish(w http.ResponseWriter, req Request, status int, rpc, msg, code string) {
	req.Status, req.ErrorCode = status, code
	s.record(req)
	writeError(w, status, rpc, msg, code)
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
	s.mu.Lock()
	s.reqs = append(s.reqs, r)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// writeError writes Google's error envelope; FCM puts its own code in a
// details entry of type google.firebase.fcm.v1.FcmError.
func writeError(w http.ResponseWriter, status int, rpc, msg, fcmCode string) {
	type detail struct {
		Type      string `json:"@type"`
		ErrorCode string `json:"errorCode,omitempty"`
	}
	e := map[string]any{"code": status, "message": msg, "status": rpc}
	if fcmCode != "" {
		e["details"] = []detail{{Type: "type.googleapis.com/google.firebase.fcm.v1.FcmError", ErrorCode: fcmCode}}
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": e})
}
