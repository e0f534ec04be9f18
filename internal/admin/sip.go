package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"
)

// Bindings lists the SIP registrar's bindings for `pushd sip bindings`
// while the node holds the database. Must be safe for concurrent use.
type Bindings interface {
	// SIPBindings returns the bindings of user (a bare JID, or every
	// binding when "").
	SIPBindings(user string) ([]Binding, error)
	// TestCall sends a test call push, then its missed-call push, to every
	// push binding of user (a bare JID) and waits for the providers'
	// answers until ctx ends; ErrNotFound when the user has none.
	TestCall(ctx context.Context, user string) ([]PushResult, error)
}

// Binding is one SIP binding, for operators: the push token appears only
// shortened (it is a credential of the device).
type Binding struct {
	AOR       string    `json:"aor"`
	Contact   string    `json:"contact"`
	Transport string    `json:"transport"`
	Instance  string    `json:"instance,omitempty"`
	Provider  string    `json:"provider,omitempty"`
	Token     string    `json:"token,omitempty"` // first and last characters only
	VoIP      bool      `json:"voip,omitempty"`
	Key       bool      `json:"key"`
	Expires   time.Time `json:"expires"`
}

// ErrNoSIP is what the client returns when the node runs without SIP.
var ErrNoSIP = errors.New("admin: the running node has SIP turned off ([sip] listen is empty)")

func (s *Server) sipRoutes(mux *http.ServeMux) {
	sip := func(h func(Bindings, http.ResponseWriter, *http.Request)) http.HandlerFunc {
		return served(s, s.cfg.Bindings, "no SIP", h)
	}
	mux.HandleFunc("GET /api/sip/bindings", sip(func(b Bindings, w http.ResponseWriter, r *http.Request) {
		list, err := b.SIPBindings(r.URL.Query().Get("user"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, list)
	}))
	mux.HandleFunc("POST /api/sip/test-call", sip(func(b Bindings, w http.ResponseWriter, r *http.Request) {
		var req testCallRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.User == "" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), testWait(req.Timeout))
		defer cancel()
		res, err := b.TestCall(ctx, req.User)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, res)
	}))
}

type testCallRequest struct {
	User    string `json:"user"`
	Timeout int64  `json:"timeout_ms,omitempty"` // 0: 30 s
}

// TestCall asks the node for a test call push; the node waits for the
// answers until ctx's deadline (30 s without one).
func (c *Client) TestCall(ctx context.Context, user string) ([]PushResult, error) {
	req := testCallRequest{User: user}
	cc, timeout := c.waiting(ctx)
	req.Timeout = timeout
	var res []PushResult
	err := cc.do(context.Background(), http.MethodPost, "/api/sip/test-call", req, &res)
	if errors.Is(err, errNotImplemented) {
		return nil, ErrNoSIP
	}
	return res, err
}

// SIPBindings makes Client an admin.Bindings.
func (c *Client) SIPBindings(user string) ([]Binding, error) {
	var list []Binding
	err := c.do(context.Background(), http.MethodGet, "/api/sip/bindings?user="+url.QueryEscape(user), nil, &list)
	if errors.Is(err, errNotImplemented) {
		return nil, ErrNoSIP
	}
	return list, err
}
