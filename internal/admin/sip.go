package admin

import (
	"context"
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
	mux.HandleFunc("GET /api/sip/bindings", s.authOnly(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Bindings == nil {
			http.Error(w, "no SIP", http.StatusNotImplemented)
			return
		}
		list, err := s.cfg.Bindings.SIPBindings(r.URL.Query().Get("user"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, list)
	}))
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
