// Package admin is the node's operator HTTP endpoint: health, readiness,
// Prometheus metrics, and the small API that lets `pushd user …` work
// while the node holds the data directory's lock, and that turns the
// push switch (O2).
//
// The API needs the bearer token the node writes into its data directory:
// whoever may read the data may administer the node. Health and metrics
// need none, so that probes and scrapers work unconfigured.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Users is what the API does to accounts; user names are bare JIDs.
type Users interface {
	AddUser(user, password string) error
	DeleteUser(user string) error
	SetPassword(user, password string) error
	ListUsers() ([]string, error)
}

// ErrExists and ErrNotFound are what Users return for a user that is, or
// is not, already there; the API maps them to 409 and 404.
var (
	ErrExists   = errors.New("user exists")
	ErrNotFound = errors.New("no such user")
)

// Config configures the admin endpoint.
type Config struct {
	// Listen is the address to bind (default "127.0.0.1:9090").
	Listen string
	// Token authorises API calls.
	Token string
	// Ready reports whether the node serves traffic (for /readyz).
	Ready func() bool
	// Gatherer is what /metrics exposes.
	Gatherer prometheus.Gatherer
	Users    Users
	// Sessions, when set, lists a user's devices for /api/sessions.
	Sessions Sessions
	// Cluster, when set, answers /api/cluster/status and /where.
	Cluster Cluster
	// Devices, when set, serves /api/devices and /api/push/test (501
	// without: the node runs no push provider).
	Devices Devices
	// Bindings, when set, serves /api/sip/bindings (501 without: SIP is
	// off on the node).
	Bindings Bindings
	// Switch, when set, serves /api/push/switch (O2).
	Switch PushSwitch
	Logger *slog.Logger
}

// Cluster reports the node's cluster for operators.
type Cluster interface {
	// Status is JSON-serialisable: members, states, roles, replication lag.
	Status() any
	// Where names a user's primary and backup node.
	Where(user string) (primary, backup string, err error)
}

// Where is the answer of /api/cluster/where.
type Where struct {
	Primary string `json:"primary"`
	Backup  string `json:"backup"`
}

// Sessions reports a user's devices as the session manager sees them.
type Sessions interface {
	Sessions(user string) ([]Session, error)
}

// Session is one device of a user, for operators.
type Session struct {
	JID      string `json:"jid"`
	Kind     string `json:"kind"`
	Detached bool   `json:"detached"`
	Active   bool   `json:"active"`
	Queued   bool   `json:"queued"`
}

// Server is a running admin endpoint.
type Server struct {
	cfg Config
	ln  net.Listener
	srv *http.Server
}

// Listen binds the admin endpoint.
func Listen(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", cfg.Listen, err)
	}
	s := &Server{cfg: cfg, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if cfg.Ready != nil && !cfg.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /api/users", s.auth(s.listUsers))
	mux.HandleFunc("POST /api/users", s.auth(s.addUser))
	mux.HandleFunc("PUT /api/users/password", s.auth(s.setPassword))
	mux.HandleFunc("DELETE /api/users", s.auth(s.deleteUser))
	mux.HandleFunc("GET /api/memory", s.authOnly(memory))
	s.sipRoutes(mux)
	if cfg.Cluster != nil {
		mux.HandleFunc("GET /api/cluster/status", s.authOnly(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(cfg.Cluster.Status())
		}))
		mux.HandleFunc("GET /api/cluster/where", s.authOnly(func(w http.ResponseWriter, r *http.Request) {
			primary, backup, err := cfg.Cluster.Where(r.URL.Query().Get("user"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(Where{Primary: primary, Backup: backup})
		}))
	}
	if cfg.Sessions != nil {
		mux.HandleFunc("GET /api/sessions", s.authOnly(func(w http.ResponseWriter, r *http.Request) {
			list, err := cfg.Sessions.Sessions(r.URL.Query().Get("user"))
			if err != nil {
				writeError(w, err)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(list)
		}))
	}
	s.devicesRoutes(mux)
	s.switchRoutes(mux)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
	}()
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// authOnly checks the bearer token.
func (s *Server) authOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("Authorization")
		want := "Bearer " + s.cfg.Token
		if s.cfg.Token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

// served wraps h behind the token, for the part dep of the node: a node
// that does not serve it (dep nil: no push provider, no SIP) answers 501
// saying what it lacks. The config is fixed from New on.
func served[T any](s *Server, dep T, lacks string, h func(T, http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return s.authOnly(func(w http.ResponseWriter, r *http.Request) {
		if any(dep) == nil {
			http.Error(w, lacks, http.StatusNotImplemented)
			return
		}
		h(dep, w, r)
	})
}

// auth checks the token and that there is a user store.
func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return s.authOnly(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Users == nil {
			http.Error(w, "no user store", http.StatusNotImplemented)
			return
		}
		h(w, r)
	})
}

// Memory is what /api/memory reports: the Go heap and stacks in use right
// after a collection, which (unlike RSS) is what the node's sessions
// actually hold. Benchmarks divide its growth by the sessions opened.
type Memory struct {
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	Sys        uint64 `json:"sys"`
}

func memory(w http.ResponseWriter, _ *http.Request) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Memory{HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse, Sys: ms.Sys})
}

type userRequest struct {
	User     string `json:"user"`
	Password string `json:"password,omitempty"`
}

func (s *Server) listUsers(w http.ResponseWriter, _ *http.Request) {
	users, err := s.cfg.Users.ListUsers()
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(users)
}

func (s *Server) addUser(w http.ResponseWriter, r *http.Request) {
	s.withUser(w, r, true, func(u userRequest) error { return s.cfg.Users.AddUser(u.User, u.Password) })
}

func (s *Server) setPassword(w http.ResponseWriter, r *http.Request) {
	s.withUser(w, r, true, func(u userRequest) error { return s.cfg.Users.SetPassword(u.User, u.Password) })
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request) {
	s.withUser(w, r, false, func(u userRequest) error { return s.cfg.Users.DeleteUser(u.User) })
}

func (s *Server) withUser(w http.ResponseWriter, r *http.Request, needPassword bool, fn func(userRequest) error) {
	var u userRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&u); err != nil || u.User == "" || (needPassword && u.Password == "") {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if err := fn(u); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrExists):
		http.Error(w, err.Error(), http.StatusConflict)
	case errors.Is(err, ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
	default:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
