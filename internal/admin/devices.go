package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"
)

// Devices is what the API does to push registrations, so that `pushd
// device …` and `pushd push test` work while the node holds the database.
// Implementations must be safe for concurrent use.
type Devices interface {
	// ListDevices returns the registrations of account (a bare JID), or
	// every registration when account is "".
	ListDevices(account string) ([]Device, error)
	// DeleteDevices removes the registration with node what, or every
	// registration of the account what (a bare JID); it returns how many
	// went, and ErrNotFound when there was none.
	DeleteDevices(what string) (int, error)
	// TestPush sends a test push to every device of account through the
	// real path and waits for the providers' answers until ctx ends.
	TestPush(ctx context.Context, account string) ([]PushResult, error)
}

// Device is one push registration, for operators: the account appears only
// as a tag of its keyed hash (the store holds no JID, S3).
type Device struct {
	Node       string    `json:"node"`
	Provider   string    `json:"provider"`
	AccountTag string    `json:"account_tag"`
	Kind       string    `json:"kind,omitempty"`
	Region     string    `json:"region,omitempty"`
	Key        bool      `json:"key"`
	VoIP       bool      `json:"voip"`
	Updated    time.Time `json:"updated"`
}

// PushResult is the providers' answer to one test push.
type PushResult struct {
	Node string `json:"node"`
	// Type is the push's, for a test call's pushes (call, missed-call).
	Type       string        `json:"type,omitempty"`
	Provider   string        `json:"provider"`
	TrackingID string        `json:"tid"`
	Attempts   []PushAttempt `json:"attempts"`
	// Error: refused by the dispatcher, or no final answer in time.
	Error string `json:"error,omitempty"`
}

// PushAttempt is one provider attempt of a test push.
type PushAttempt struct {
	Result string `json:"result"` // delivered, dead_token, retry, fatal
	Status int    `json:"status"`
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Delivered reports whether the last attempt was delivered.
func (r PushResult) Delivered() bool {
	return r.Error == "" && len(r.Attempts) > 0 && r.Attempts[len(r.Attempts)-1].Result == "delivered"
}

// ErrNoPush is what the client returns when the node runs without a push
// provider.
var ErrNoPush = errors.New("admin: the running node has no push provider configured")

type deleteResult struct {
	Removed int `json:"removed"`
}

type testPushRequest struct {
	Account string `json:"account"`
	// Timeout in milliseconds (0: 30 s).
	Timeout int64 `json:"timeout_ms,omitempty"`
}

// maxTestPushWait bounds how long the API holds a test-push request.
const maxTestPushWait = 5 * time.Minute

func (s *Server) devicesRoutes(mux *http.ServeMux) {
	devices := func(h func(Devices, http.ResponseWriter, *http.Request)) http.HandlerFunc {
		return served(s, s.cfg.Devices, "no push provider", h)
	}
	mux.HandleFunc("GET /api/devices", devices(func(d Devices, w http.ResponseWriter, r *http.Request) {
		list, err := d.ListDevices(r.URL.Query().Get("account"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, list)
	}))
	mux.HandleFunc("DELETE /api/devices", devices(func(d Devices, w http.ResponseWriter, r *http.Request) {
		what := r.URL.Query().Get("what")
		if what == "" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		n, err := d.DeleteDevices(what)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, deleteResult{Removed: n})
	}))
	mux.HandleFunc("POST /api/push/test", devices(func(d Devices, w http.ResponseWriter, r *http.Request) {
		var req testPushRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.Account == "" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), testWait(req.Timeout))
		defer cancel()
		res, err := d.TestPush(ctx, req.Account)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, res)
	}))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// ListDevices, DeleteDevices and TestPush make Client an admin.Devices.
func (c *Client) ListDevices(account string) ([]Device, error) {
	var list []Device
	err := c.pushCall(context.Background(), http.MethodGet, "/api/devices?account="+url.QueryEscape(account), nil, &list)
	return list, err
}

func (c *Client) DeleteDevices(what string) (int, error) {
	var res deleteResult
	err := c.pushCall(context.Background(), http.MethodDelete, "/api/devices?what="+url.QueryEscape(what), nil, &res)
	return res.Removed, err
}

// TestPush asks the node for a test push; the node waits for the answers
// until ctx's deadline (30 s without one).
func (c *Client) TestPush(ctx context.Context, account string) ([]PushResult, error) {
	req := testPushRequest{Account: account}
	cc, timeout := c.waiting(ctx)
	req.Timeout = timeout
	var res []PushResult
	err := cc.pushCall(context.Background(), http.MethodPost, "/api/push/test", req, &res)
	return res, err
}

// waiting is c for a request the node holds until its own wait ends
// (ctx's deadline, sent as timeout in ms; 0: none, the node's 30 s).
func (c *Client) waiting(ctx context.Context) (cc *Client, timeout int64) {
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl).Milliseconds(), 1)
	}
	hc := c.HTTP
	if hc == nil {
		// The node answers when its own wait ends; leave it room.
		hc = &http.Client{Timeout: time.Duration(timeout)*time.Millisecond + 30*time.Second}
		if timeout == 0 {
			hc.Timeout = time.Minute
		}
	}
	copied := *c
	copied.HTTP = hc
	return &copied, timeout
}

// testWait is how long the API holds a test push: timeout ms, 30 s when
// 0, at most maxTestPushWait.
func testWait(timeout int64) time.Duration {
	wait := time.Duration(timeout) * time.Millisecond
	if wait <= 0 {
		wait = 30 * time.Second
	}
	return min(wait, maxTestPushWait)
}

func (c *Client) pushCall(ctx context.Context, method, path string, body, out any) error {
	err := c.do(ctx, method, path, body, out)
	if errors.Is(err, errNotImplemented) {
		return ErrNoPush
	}
	return err
}
