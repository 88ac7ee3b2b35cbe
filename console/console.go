// Package console owns the live debug console (docs/console.md): the page
// (plain HTML, CSS and JS under web/, embedded in the binary), its login,
// and its admin endpoints under /console: the event stream (Server-Sent
// Events of the debug events of every node, from debugtap over NATS), the
// event creator (through the API's publish path), the stats at a glance
// (per node, from the counters behind the metrics) and the socket
// inspector (asked of the socket's node over NATS). It also answers the
// other nodes' console questions on the herald.sys.debug.* subjects, so it
// runs on every node, with or without an admin listener.
//
// `herald tap` is a client of the same stream (Stream, client.go).
package console

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"herald/admin"
	"herald/app"
	"herald/bus"
	"herald/debugtap"
	"herald/gateway"
	"herald/protocol"
)

//go:embed web
var webFiles embed.FS

// Gateway is what the console reads from this node's edge.
type Gateway interface {
	Metrics() gateway.Metrics
	Channels(app string, fn func(name string, subscriptions int))
	Inspect(ctx context.Context, app, socketID string) (gateway.SocketInfo, error)
}

// Bus is the console's NATS plumbing (bus/debug.go).
type Bus interface {
	SubscribeDebug(app string, fn func(data []byte)) (*bus.DebugSubscription, error)
	ServeDebug(subject string, fn func(req []byte) []byte) (*bus.DebugSubscription, error)
	AskDebug(ctx context.Context, subject string, req []byte, want int, wait time.Duration, done func([]byte) bool) ([][]byte, error)
}

// Config sets up the console of one node. Every field but Logger and
// Members is required.
type Config struct {
	Node       string
	Bus        Bus
	Gateway    Gateway
	Tap        *debugtap.Tap
	Apps       *app.Registry
	AdminToken string // admin.token: logs in for every app; "" = the console is open, like the admin API
	// Publish stores an events body (POST /apps/{id}/events) for the app
	// through the API's publish path (api.Server.Events).
	Publish func(a *app.App, body []byte) ([]byte, error)
	Members func() int // live nodes, this one included; nil: 1
	Logger  *slog.Logger
}

// Console is one node's console.
type Console struct {
	cfg     Config
	log     *slog.Logger
	key     []byte // signs session cookies (auth.go); per process
	hist    *history
	subs    []*bus.DebugSubscription
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	mu      sync.Mutex     // orders stream starts against Stop
	stopped bool           // under mu
	streams sync.WaitGroup // open event streams, ended by Stop
}

// Start answers the other nodes' console questions and starts recording
// this node's figures for the sparklines.
func Start(cfg Config) (*Console, error) {
	if cfg.Bus == nil || cfg.Gateway == nil || cfg.Apps == nil || cfg.Publish == nil || cfg.Tap == nil {
		return nil, errors.New("console: Bus, Gateway, Apps, Publish and Tap are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Members == nil {
		cfg.Members = func() int { return 1 }
	}
	c := &Console{cfg: cfg, log: cfg.Logger, key: make([]byte, 32), hist: newHistory(), stop: make(chan struct{})}
	if _, err := rand.Read(c.key); err != nil {
		return nil, fmt.Errorf("console: session key: %w", err)
	}
	for subject, fn := range map[string]func([]byte) []byte{
		bus.SysDebugWatchSubject:  cfg.Tap.ApplyJSON,
		bus.SysDebugStatsSubject:  c.answerStats,
		bus.SysDebugSocketSubject: c.answerSocket,
	} {
		sub, err := cfg.Bus.ServeDebug(subject, fn)
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("console: %w", err)
		}
		c.subs = append(c.subs, sub)
	}
	c.hist.record(cfg.Gateway.Metrics(), time.Now())
	c.wg.Add(1)
	go c.sample()
	return c, nil
}

// Stop ends the open event streams, stops answering and recording. Safe
// on a nil Console and more than once.
func (c *Console) Stop() {
	if c == nil {
		return
	}
	c.once.Do(func() {
		c.mu.Lock()
		c.stopped = true
		c.mu.Unlock()
		close(c.stop)
		c.streams.Wait()
		for _, s := range c.subs {
			s.Stop()
		}
		c.wg.Wait()
	})
}

// Routes registers the console's endpoints on the admin listener. They
// bypass the admin bearer check and apply their own (auth.go), which also
// accepts that token.
func (c *Console) Routes(s *admin.Server) {
	if c == nil {
		return
	}
	static, _ := fs.Sub(webFiles, "web")
	files := http.StripPrefix("/console/static/", http.FileServerFS(static))
	s.HandleUnauthenticated("GET /console", c.page)
	s.HandleUnauthenticated("GET /console/{$}", c.page)
	s.HandleUnauthenticated("GET /console/static/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
	s.HandleUnauthenticated("POST /console/api/login", c.login)
	s.HandleUnauthenticated("POST /console/api/logout", c.logout)
	s.HandleUnauthenticated("GET /console/api/session", c.authed(c.session))
	s.HandleUnauthenticated("GET /console/api/stream", c.authed(c.stream))
	s.HandleUnauthenticated("POST /console/api/publish", c.authed(c.publish))
	s.HandleUnauthenticated("GET /console/api/stats", c.authed(c.stats))
	s.HandleUnauthenticated("GET /console/api/socket", c.authed(c.socket))
}

// page serves index.html. The page holds no secret: everything it shows
// comes from the API endpoints after login.
func (c *Console) page(w http.ResponseWriter, r *http.Request) {
	b, err := webFiles.ReadFile("web/index.html")
	if err != nil {
		admin.WriteError(w, http.StatusInternalServerError, "console: page missing from the binary: %v", err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
	_, _ = w.Write(b)
}

// publishRequest is the event creator's body.
type publishRequest struct {
	App      string `json:"app"`
	Channel  string `json:"channel"`
	Event    string `json:"event"`
	Data     string `json:"data"`
	SocketID string `json:"socket_id,omitempty"` // excluded from delivery
}

// publish stores one event through the API's publish path, with its
// validation and limits, and answers what REST would.
func (c *Console) publish(w http.ResponseWriter, r *http.Request, s scope) {
	var req publishRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		admin.WriteError(w, http.StatusBadRequest, "console: publish: bad JSON body: %v", err)
		return
	}
	a, ok := c.app(w, s, req.App)
	if !ok {
		return
	}
	body, _ := json.Marshal(struct {
		Name     string `json:"name"`
		Channel  string `json:"channel"`
		Data     string `json:"data"`
		SocketID string `json:"socket_id,omitempty"`
	}{req.Event, req.Channel, req.Data, req.SocketID})
	answer, err := c.cfg.Publish(a, body)
	if err != nil {
		var he *protocol.HTTPError
		if !errors.As(err, &he) {
			he = &protocol.HTTPError{Status: http.StatusInternalServerError, Message: err.Error()}
		}
		admin.WriteError(w, he.Status, "%s", he.Message)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(answer)
}

// app resolves the app a request names, within the session's scope.
func (c *Console) app(w http.ResponseWriter, s scope, id string) (*app.App, bool) {
	if !s.allows(id) {
		admin.WriteError(w, http.StatusForbidden, "console: this login is for app %q only", s.app)
		return nil, false
	}
	a, ok := c.cfg.Apps.ByID(id)
	if !ok {
		admin.WriteError(w, http.StatusNotFound, "console: unknown app %q", id)
		return nil, false
	}
	return a, true
}

// randomID is a watcher id: unique per stream across the cluster.
func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
