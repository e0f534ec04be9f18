package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// PushSwitch is the push switch (BEHAVIOUR O2) for `pushd push
// enable|disable|status`. Must be safe for concurrent use.
type PushSwitch interface {
	PushSwitch() SwitchState
	// SetPushSwitch turns every push of the cluster on or off; it returns
	// once the change is stored here and has reached the members alive.
	SetPushSwitch(enabled bool) (SwitchState, error)
}

// SwitchState is the push switch as the API shows it: on or off, its
// version (newest wins across the cluster), the member that set it and
// when. No personal data.
type SwitchState struct {
	Enabled bool      `json:"enabled"`
	Version uint64    `json:"version"`
	Node    string    `json:"node,omitempty"`
	Changed time.Time `json:"changed,omitzero"`
}

type switchRequest struct {
	Enabled *bool `json:"enabled"`
}

func (s *Server) switchRoutes(mux *http.ServeMux) {
	sw := func(h func(PushSwitch, http.ResponseWriter, *http.Request)) http.HandlerFunc {
		return served(s, s.cfg.Switch, "no push switch", h)
	}
	mux.HandleFunc("GET /api/push/switch", sw(func(p PushSwitch, w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, p.PushSwitch())
	}))
	mux.HandleFunc("POST /api/push/switch", sw(func(p PushSwitch, w http.ResponseWriter, r *http.Request) {
		var req switchRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.Enabled == nil {
			http.Error(w, `bad request: want {"enabled": true|false}`, http.StatusBadRequest)
			return
		}
		st, err := p.SetPushSwitch(*req.Enabled)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, st)
	}))
}

// PushSwitch and SetPushSwitch make Client an admin.PushSwitch.
func (c *Client) PushSwitch() (SwitchState, error) {
	var st SwitchState
	err := c.do(context.Background(), http.MethodGet, "/api/push/switch", nil, &st)
	return st, err
}

func (c *Client) SetPushSwitch(enabled bool) (SwitchState, error) {
	var st SwitchState
	err := c.do(context.Background(), http.MethodPost, "/api/push/switch", switchRequest{Enabled: &enabled}, &st)
	return st, err
}
