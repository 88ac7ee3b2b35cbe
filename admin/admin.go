// Package admin owns the node's admin API: an HTTP listener of its own
// (admin.listen, apart from the client port, so that a load balancer never
// exposes it), its bearer-token check (admin.token), the JSON error shape
// every admin endpoint answers with, and the Client that herald's tools
// (drain, reload, status, webhooks) use to call it.
//
// The endpoints themselves belong to the parts they operate: node registers
// drain, reload and status, the webhook sender its status and replay
// (docs/operations.md lists them). The admin API is not on a hot path, so it
// is net/http, not fasthttp.
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
	"strings"
	"time"
)

// Config configures the admin listener.
type Config struct {
	Listen string // host:port; port 0 picks a free port
	Token  string // "" = no token (configs requires one beyond loopback)
	Logger *slog.Logger
}

// Server is the admin API's listener and routes.
type Server struct {
	token string
	log   *slog.Logger
	mux   *http.ServeMux
	open  *http.ServeMux // routes with a login of their own (HandleUnauthenticated)
	ln    net.Listener
	srv   *http.Server
	done  chan struct{}
}

// Listen binds the admin listener; Serve starts answering. Binding first
// lets a node fail fast, with one error, when the port is taken.
func Listen(cfg Config) (*Server, error) {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", cfg.Listen, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{token: cfg.Token, log: log, mux: http.NewServeMux(), open: http.NewServeMux(), ln: ln, done: make(chan struct{})}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, "no admin endpoint %s %s", r.Method, r.URL.Path)
	})
	return s, nil
}

// Handle registers h for pattern (net/http ServeMux syntax:
// "POST /drain", "GET /webhooks/status"). Register before Serve.
func (s *Server) Handle(pattern string, h http.HandlerFunc) { s.mux.HandleFunc(pattern, h) }

// HandleUnauthenticated registers h for pattern without the bearer-token
// check: for endpoints that authenticate on their own, such as the debug
// console's page and login (console/auth.go). Register before Serve.
func (s *Server) HandleUnauthenticated(pattern string, h http.HandlerFunc) {
	s.open.HandleFunc(pattern, h)
}

// Serve answers requests until Close.
func (s *Server) Serve() {
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin: serve", "err", err)
		}
	}()
}

// Addr is the address the admin API listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the admin API's base URL (http://host:port).
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops the listener and waits, until ctx ends, for requests in
// flight.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	select {
	case <-s.done:
	default: // Serve was never called
		_ = s.ln.Close()
	}
	if err != nil {
		return fmt.Errorf("admin: close: %w", err)
	}
	return nil
}

// ServeHTTP checks the token, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, pattern := s.open.Handler(r); pattern != "" {
		h.ServeHTTP(w, r)
		return
	}
	if s.token != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="herald admin"`)
			WriteError(w, http.StatusUnauthorized, "admin API: missing or wrong bearer token (--token or HERALD_ADMIN_TOKEN)")
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// ErrorBody is every admin error's JSON body, the shape of the REST API's
// errors.
type ErrorBody struct {
	Error  string `json:"error"`
	Status int    `json:"status"`
}

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError answers with ErrorBody.
func WriteError(w http.ResponseWriter, status int, format string, args ...any) {
	WriteJSON(w, status, ErrorBody{Error: fmt.Sprintf(format, args...), Status: status})
}
