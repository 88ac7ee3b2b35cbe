// Package api owns Herald's HTTP surface on the client port: routing of every
// request fasthttp serves, the Pusher REST API (request signatures, trigger
// and batch publishing), /healthz, /readyz and /metrics. WebSocket upgrades
// are handed to the gateway; api never touches sockets itself.
//
// Routing is a handful of fixed paths, so it is done by hand rather than with
// a router library.
package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"herald/app"
	"herald/bus"
	"herald/debugtap"
	"herald/protocol"
)

// Publisher stores events in the bus. Publish returns once the event is
// stored (acknowledged by the stream), so a 200 answer means replayable.
type Publisher interface {
	PublishBatch(ctx context.Context, ps []bus.Publication) ([]uint64, error)
}

// Submitter is a Publisher that can send a publish without waiting for its
// acknowledgements (bus.Bus: group commit, bus/commit.go). Through one the
// NATS API pipelines: a worker submits and takes the next message while a
// committer waits for the acks and answers (natsapi.go). REST submits and
// waits in the request's own goroutine; a 200 still means stored.
type Submitter interface {
	Submit(ctx context.Context, ps []bus.Publication) *bus.Pending
}

// Counts answers subscription questions and user commands: on one node the
// gateway's local index, in a cluster bus.ChannelQueries (every live node's).
type Counts interface {
	// SubscriptionCount is the number of connections subscribed to a channel.
	SubscriptionCount(app, channel string) int
	// Channels calls fn for every channel of the app that has at least one
	// subscriber, with its subscription count.
	Channels(app string, fn func(channel string, subscriptions int))
	// TerminateUser closes every connection signed in as the user and
	// returns how many there were.
	TerminateUser(app, userID string) int
}

// Members answers presence questions. The gateway does, from its presence
// registry, which is cluster-wide already.
type Members interface {
	// UserCount is the number of distinct users in a presence channel.
	UserCount(app, channel string) int
	// Users returns the distinct user ids in a presence channel.
	Users(app, channel string) []string
}

// Cache reads the last event of cache channels (bus.Bus does).
type Cache interface {
	LastEvent(ctx context.Context, app, channel string) (bus.CachedEvent, bool, error)
}

// Config sets up the HTTP server.
type Config struct {
	Apps           *app.Registry           // required: every request's app is looked up here
	Upgrade        fasthttp.RequestHandler // required: WebSocket upgrades (the gateway's ServeUpgrade)
	Publisher      Publisher               // required
	Counts         Counts                  // required
	Members        Members                 // required
	Cache          Cache                   // nil: cache queries answer "cache":null
	Registry       *prometheus.Registry    // metrics served at /metrics; nil: none
	Logger         *slog.Logger
	MaxBodyBytes   int
	ReadBufferSize int
	PublishTimeout time.Duration // how long a REST call waits for the stream's ack; 0: 5s
	Tap            *debugtap.Tap // debug events of publishes (docs/console.md); nil: none
	Now            func() time.Time
	// HandshakeTimeout bounds the wait for a new connection's request
	// header (gateway.handshake_timeout); 0: RESTReadTimeout (limits.go).
	HandshakeTimeout time.Duration
	// NotReady, when set, is asked by every /readyz: a non-empty answer
	// is why the node cannot serve now (its store is full), and /readyz
	// answers 503 with it until it is empty again.
	NotReady func() string
}

// Server is the client port's HTTP server.
type Server struct {
	cfg     Config
	fs      *fasthttp.Server
	ready   atomic.Bool
	metrics fasthttp.RequestHandler
	reqs    *prometheus.CounterVec
	latency *prometheus.HistogramVec
	authErr atomic.Uint64 // requests refused by the signature check (AuthFailures)
	limits  limits        // HTTP-level limits and their refusals (limits.go)
}

// New builds the server; Serve starts it.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = RESTReadTimeout
	}
	s := &Server{cfg: cfg}
	s.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_rest_requests_total",
		Help: "REST API requests by endpoint and HTTP status.",
	}, []string{"endpoint", "status"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "herald_rest_request_duration_seconds",
		Help:    "REST API request latency by endpoint, from routing to the answer (a publish includes the stream's ack).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"endpoint"})
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(s.reqs, s.latency)
		s.metrics = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	}
	s.fs = &fasthttp.Server{
		Handler:                      s.handle,
		Name:                         "herald",
		KeepHijackedConns:            true,
		ReadBufferSize:               cfg.ReadBufferSize,
		MaxRequestBodySize:           cfg.MaxBodyBytes,
		ReadTimeout:                  cfg.HandshakeTimeout, // a header's deadline; HeaderReceived gives a REST body more (limits.go)
		HeaderReceived:               s.headerReceived,
		ErrorHandler:                 s.requestError,
		IdleTimeout:                  120 * time.Second,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        false,
		Logger:                       fasthttpLogger{cfg.Logger},
	}
	return s
}

// Serve serves HTTP on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.fs.Serve(ln) }

// AuthFailures is how many REST requests the signature check refused.
func (s *Server) AuthFailures() uint64 { return s.authErr.Load() }

// SetReady switches /readyz between 200 and 503 (start, drain); while it
// is on, Config.NotReady can still turn it 503.
func (s *Server) SetReady(ok bool) { s.ready.Store(ok) }

// Ready reports what /readyz answers: true for 200.
func (s *Server) Ready() bool { return s.notReady() == "" }

// notReady is why /readyz answers 503, or "" when it answers 200.
func (s *Server) notReady() string {
	if !s.ready.Load() {
		return "not ready"
	}
	if s.cfg.NotReady != nil {
		if why := s.cfg.NotReady(); why != "" {
			return "not ready: " + why
		}
	}
	return ""
}

// Shutdown stops accepting and waits for open HTTP requests to finish.
// Hijacked WebSocket connections are the gateway's to close.
func (s *Server) Shutdown(ctx context.Context) error { return s.fs.ShutdownWithContext(ctx) }

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	switch {
	case bytes.HasPrefix(path, []byte("/apps/")):
		s.rest(ctx)
	case bytes.HasPrefix(path, []byte("/app/")) || isUpgrade(ctx):
		s.cfg.Upgrade(ctx)
	case string(path) == "/healthz":
		writeJSON(ctx, fasthttp.StatusOK, []byte(`{"status":"ok"}`))
	case string(path) == "/readyz":
		if why := s.notReady(); why == "" {
			writeJSON(ctx, fasthttp.StatusOK, []byte(`{"status":"ready"}`))
		} else {
			writeError(ctx, &protocol.HTTPError{Status: fasthttp.StatusServiceUnavailable, Message: why})
		}
	case string(path) == "/metrics" && s.metrics != nil:
		s.metrics(ctx)
	default:
		writeError(ctx, &protocol.HTTPError{Status: fasthttp.StatusNotFound, Message: "Not found"})
	}
}

func isUpgrade(ctx *fasthttp.RequestCtx) bool {
	return bytes.EqualFold(ctx.Request.Header.Peek("Upgrade"), []byte("websocket"))
}

// rest routes /apps/{id}/... after authenticating the request.
func (s *Server) rest(ctx *fasthttp.RequestCtx) {
	rest := ctx.Path()[len("/apps/"):]
	id, sub, _ := bytes.Cut(rest, []byte("/"))
	endpoint := "unknown"
	began := time.Now()
	defer func() {
		s.reqs.WithLabelValues(endpoint, strconv.Itoa(ctx.Response.StatusCode())).Inc()
		s.latency.WithLabelValues(endpoint).Observe(time.Since(began).Seconds())
	}()

	a, ok := s.cfg.Apps.ByID(string(id))
	if !ok {
		writeError(ctx, &protocol.HTTPError{Status: fasthttp.StatusNotFound, Message: "Unknown app " + strconv.Quote(string(id))})
		return
	}
	var handler func(*fasthttp.RequestCtx, *app.App) error
	switch {
	case string(sub) == "events" && ctx.IsPost():
		endpoint, handler = "events", s.trigger
	case string(sub) == "batch_events" && ctx.IsPost():
		endpoint, handler = "batch_events", s.batch
	default:
		var err error
		if endpoint, handler, err = s.restRoute(ctx, string(sub)); err != nil {
			writeError(ctx, err)
			return
		}
	}
	if err := s.authenticate(ctx, a); err != nil {
		s.authErr.Add(1)
		writeError(ctx, err)
		return
	}
	done, ok := s.limits.begin(a)
	if !ok {
		writeError(ctx, &protocol.HTTPError{Status: fasthttp.StatusTooManyRequests, Message: "Too many concurrent requests for this app: at most " +
			strconv.Itoa(a.MaxConcurrentRESTRequests) + " (apps[].max_concurrent_rest_requests)"})
		return
	}
	defer done()
	if err := handler(ctx, a); err != nil {
		writeError(ctx, err)
	}
}

// authenticate checks the request signature (docs/protocol.md §6.2) on the
// path as it arrived on the wire, against each of the app's secrets: the
// current one, then apps[].previous_secrets while a secret rotates
// (docs/operations.md). Each is compared in constant time; the error is the
// current secret's.
func (s *Server) authenticate(ctx *fasthttp.RequestCtx, app *app.App) error {
	uri := ctx.URI()
	path := uri.PathOriginal()
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	now := s.cfg.Now()
	// The clock the signature's auth_timestamp was checked against, in
	// milliseconds: `herald probe` reports the REST clock skew from it
	// (the Date header has whole seconds; docs/protocol-extensions.md).
	ctx.Response.Header.Set(HeaderTime, strconv.FormatInt(now.UnixMilli(), 10))
	req := protocol.RESTRequest{
		Method:   string(ctx.Method()),
		Path:     string(path),
		RawQuery: string(uri.QueryString()),
		Body:     ctx.PostBody(),
	}
	var first error
	for _, secret := range app.Secrets() {
		err := protocol.VerifyREST(req, app.Key, secret, now)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// HeaderTime is the REST answer header with the server's clock, in Unix
// milliseconds, as the request signature check read it.
const HeaderTime = "Herald-Time"

// writeError answers with the error's status and JSON body; errors that are
// not *protocol.HTTPError are internal.
func writeError(ctx *fasthttp.RequestCtx, err error) {
	var he *protocol.HTTPError
	if !errors.As(err, &he) {
		he = &protocol.HTTPError{Status: fasthttp.StatusInternalServerError, Message: err.Error()}
	}
	writeJSON(ctx, he.Status, he.Body())
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug("fasthttp", "msg", fmt.Sprintf(format, args...))
}
