package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"herald/app"
	"herald/bus"
	"herald/debugtap"
)

// Defaults of Config's zero fields. The first five are the webhooks: keys'
// defaults (configs/config.go).
const (
	DefaultRetryFor         = 24 * time.Hour
	DefaultTimeout          = 5 * time.Second
	DefaultBatchSize        = 50
	DefaultWorkers          = 8
	DefaultDeadLetterMaxAge = 7 * 24 * time.Hour
	DefaultMinBackoff       = time.Second
	DefaultMaxBackoff       = time.Minute
	DefaultPartitions       = 4
	DefaultCacheMissWindow  = 10 * time.Second

	// queueLen bounds the client_event and cache_miss events waiting to be
	// stored; past it they are dropped (herald_webhook_dropped_total).
	queueLen = 8192
	// cacheMissKeys bounds the de-duplication memory of cache_miss.
	cacheMissKeys = 65536
	// syncEvery is how often the registry is checked for a reload that
	// added or removed webhooks.
	syncEvery = time.Second
	// storeWait bounds one store of queued events.
	storeWait = 10 * time.Second
)

// Config configures a Sender. Zero fields take the defaults above.
type Config struct {
	Bus  *bus.Bus      // required, with streams on
	Apps *app.Registry // required: targets and secrets are read here at send time

	RetryFor         time.Duration // how long after it was stored an event is retried before it is dead-lettered
	Timeout          time.Duration // per request
	BatchSize        int           // most events per request
	Workers          int           // concurrent requests per node
	DeadLetterMaxAge time.Duration // how long dead letters are kept

	MinBackoff time.Duration // first retry delay (before jitter)
	MaxBackoff time.Duration // longest retry delay
	Partitions int           // outbox partitions per target (ordering lanes)
	// CacheMissWindow: at most one cache_miss per channel per window.
	CacheMissWindow time.Duration

	// Members is how many nodes are live members of the cluster, this one
	// included; nil on a single node. With it, PeerGone releases the pins
	// of a node that is gone (pins.go).
	Members func() int

	// Tap gets every delivery attempt while the debug console watches the
	// app (docs/console.md); nil: none.
	Tap *debugtap.Tap

	Registerer prometheus.Registerer // nil: metrics are not registered
	Logger     *slog.Logger
	// HTTP sends the requests; nil: a client with Timeout per request.
	HTTP *http.Client
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.RetryFor, DefaultRetryFor)
	def(&c.Timeout, DefaultTimeout)
	def(&c.DeadLetterMaxAge, DefaultDeadLetterMaxAge)
	def(&c.MinBackoff, DefaultMinBackoff)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	def(&c.CacheMissWindow, DefaultCacheMissWindow)
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.Partitions <= 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.HTTP == nil {
		c.HTTP = &http.Client{
			Timeout: c.Timeout,
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				MaxIdleConnsPerHost: c.Workers,
				IdleConnTimeout:     90 * time.Second,
			},
		}
	}
	return c
}

// Sender is the node's webhook outbox and delivery (webhook.Outbox): it
// writes events into HERALD-WEBHOOKS and runs the lanes that deliver them.
// All methods are safe for concurrent use.
type Sender struct {
	cfg     Config
	log     *slog.Logger
	streams *bus.WebhookStreams
	js      jetstream.JetStream
	targets targetCache
	m       *metrics

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool

	queue chan queued     // client_event and cache_miss waiting to be stored
	slots chan struct{}   // one per worker: held while a request is in flight
	lanes laneSet         // deliver.go
	stats targetStatsSet  // admin.go
	miss  cacheMissFilter // cache_miss de-duplication

	// Pins of lost nodes (pins.go).
	pinSub *nats.Subscription
	lost   chan struct{}
	lostMu sync.Mutex
	lostAt time.Time
}

type queued struct {
	app string
	ev  Event
}

var _ Outbox = (*Sender)(nil)

// Start makes sure of the webhook streams, then starts the sender: one
// goroutine that stores queued client_event and cache_miss events, one
// that watches the registry for reloads, and, per target and partition, a
// lane (deliver.go). With no webhook configured no lane runs.
func Start(ctx context.Context, cfg Config) (*Sender, error) {
	if cfg.Bus == nil || cfg.Apps == nil {
		return nil, errors.New("webhook: Bus and Apps are required")
	}
	cfg = cfg.withDefaults()
	s := &Sender{
		cfg:     cfg,
		log:     cfg.Logger,
		targets: targetCache{apps: cfg.Apps},
		queue:   make(chan queued, queueLen),
		slots:   make(chan struct{}, cfg.Workers),
		miss:    cacheMissFilter{window: cfg.CacheMissWindow, seen: make(map[string]time.Time)},
		lost:    make(chan struct{}, 1),
	}
	streams, err := cfg.Bus.EnsureWebhookStreams(ctx, bus.WebhookStreamsConfig{
		RetryFor:         cfg.RetryFor,
		DeadLetterMaxAge: cfg.DeadLetterMaxAge,
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	s.streams, s.js = streams, streams.JS
	s.m = newMetrics(s)
	if cfg.Registerer != nil {
		if err := s.m.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("webhook: metrics: %w", err)
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.lanes.lanes = make(map[string]*lane)
	if err := s.sync(ctx); err != nil {
		s.cancel()
		s.lanes.stopAll()
		return nil, err
	}
	if err := s.startPins(); err != nil {
		s.cancel()
		s.lanes.stopAll()
		return nil, err
	}
	s.wg.Add(2)
	go s.storeLoop()
	go s.watchLoop()
	return s, nil
}

// Close stops every lane (a request in flight is cancelled; its events are
// delivered again, by this node after a restart or by another), stores
// what is queued (briefly), and returns when no goroutine of the sender is
// left. The bus must still be running. Calling it again is a no-op.
func (s *Sender) Close() {
	if !s.closed.CompareAndSwap(false, true) {
		return
	}
	s.cancel()
	s.wg.Wait()
	s.lanes.stopAll()
	s.cfg.HTTP.CloseIdleConnections() // no keep-alive reader outlives the sender
}

// Enqueue stores events of appID for every webhook of the app that wants
// each, and returns once every copy is stored (webhook.Outbox). It waits
// for the stream's acknowledgements, resending through a leader change
// until ctx ends; an event whose id was stored already is dropped by the
// stream's dedupe window. Call it without holding locks.
func (s *Sender) Enqueue(ctx context.Context, appID string, events []Event) error {
	if s.closed.Load() {
		return errors.New("webhook: enqueue: sender closed")
	}
	a, ok := s.cfg.Apps.ByID(appID)
	if !ok {
		return fmt.Errorf("webhook: enqueue: unknown app %q", appID)
	}
	for i := range events {
		if events[i].ID == "" || events[i].Name == "" || events[i].Channel == "" {
			return fmt.Errorf("webhook: enqueue: event %d: id, name and channel are required", i)
		}
	}
	return s.store(ctx, a, events)
}

// store writes each event once per target of a that wants it and waits for
// every acknowledgement.
func (s *Sender) store(ctx context.Context, a *app.App, events []Event) error {
	var msgs []*nats.Msg
	var ids []string
	for i := range events {
		ev := &events[i]
		ids = wanted(a, ev.Name, ev.Channel, ids)
		if len(ids) == 0 {
			continue
		}
		body, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("webhook: encode event %q: %w", ev.ID, err)
		}
		part := partition(ev.Channel, s.cfg.Partitions)
		for _, id := range ids {
			m := nats.NewMsg(bus.WebhookOutboxSubject(a.ID, id, part))
			m.Data = body
			m.Header.Set(jetstream.MsgIDHeader, ev.ID+"."+id)
			msgs = append(msgs, m)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := s.publishAll(ctx, msgs); err != nil {
		return err
	}
	s.m.queued.WithLabelValues(a.ID).Add(float64(len(msgs)))
	return nil
}

// publishAll publishes msgs without waiting between them, then waits for
// their acknowledgements; one not acknowledged in time, or refused while a
// leader is elected, is resent with the same Nats-Msg-Id until ctx ends.
func (s *Sender) publishAll(ctx context.Context, msgs []*nats.Msg) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
	}
	todo := msgs
	for attempt := 0; ; attempt++ {
		futs := make([]jetstream.PubAckFuture, 0, len(todo))
		for _, m := range todo {
			f, err := s.js.PublishMsgAsync(m, jetstream.WithStallWait(2*time.Second))
			if err != nil {
				return fmt.Errorf("webhook: store %q: %w", m.Subject, err)
			}
			futs = append(futs, f)
		}
		var again []*nats.Msg
		wait := time.NewTimer(2 * time.Second)
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				if !resendable(err) {
					wait.Stop()
					return fmt.Errorf("webhook: store %q: %w", f.Msg().Subject, err)
				}
				again = append(again, f.Msg())
			case <-wait.C:
				again = append(again, f.Msg())
			case <-ctx.Done():
				wait.Stop()
				return fmt.Errorf("webhook: store: %w", ctx.Err())
			}
		}
		wait.Stop()
		if len(again) == 0 {
			return nil
		}
		s.log.Debug("webhook: store: resending", "messages", len(again), "attempt", attempt+1)
		todo = again
		select {
		case <-ctx.Done():
			return fmt.Errorf("webhook: store: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// resendable reports whether a publish error may pass by itself (no
// answer, no responder, a leader election): the resend is deduplicated.
func resendable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503
	}
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// ClientEvent queues a client_event webhook for a client event accepted on
// channel (gateway.WebhookSink). data is the event's data as the client
// sent it (raw JSON): a JSON string is passed as its value, anything else
// as its JSON text. userID is set on presence channels. It never blocks: a
// full queue drops the event (herald_webhook_dropped_total).
func (s *Sender) ClientEvent(a *app.App, channel, event string, data []byte, socketID, userID string) {
	s.enqueueAsync(a, Event{
		ID:       nuid.Next(),
		Name:     app.WebhookClientEvent,
		Channel:  channel,
		Event:    event,
		Data:     dataString(data),
		SocketID: socketID,
		UserID:   userID,
	})
}

// CacheMiss queues a cache_miss webhook for a subscriber of a cache channel
// that had nothing cached (gateway.WebhookSink): at most one per channel
// per CacheMissWindow. It never blocks.
func (s *Sender) CacheMiss(a *app.App, channel string) {
	if !s.miss.first(a.ID, channel, time.Now()) {
		return
	}
	s.enqueueAsync(a, Event{ID: nuid.Next(), Name: app.WebhookCacheMiss, Channel: channel})
}

func (s *Sender) enqueueAsync(a *app.App, ev Event) {
	if s.closed.Load() {
		s.m.dropped.WithLabelValues(a.ID, "closed").Inc()
		return
	}
	select {
	case s.queue <- queued{app: a.ID, ev: ev}:
	default:
		s.m.dropped.WithLabelValues(a.ID, "queue_full").Inc()
	}
}

// dataString is the client_event data field for data as sent.
func dataString(data []byte) string {
	if len(data) > 0 && data[0] == '"' {
		var s string
		if json.Unmarshal(data, &s) == nil {
			return s
		}
	}
	return string(data)
}

// storeLoop stores queued events, as many as wait at once, per app.
func (s *Sender) storeLoop() {
	defer s.wg.Done()
	batch := make(map[string][]Event)
	for {
		select {
		case <-s.ctx.Done():
			s.drainQueue(batch)
			return
		case q := <-s.queue:
			batch[q.app] = append(batch[q.app], q.ev)
		}
	more:
		for n := 1; n < 1024; n++ {
			select {
			case q := <-s.queue:
				batch[q.app] = append(batch[q.app], q.ev)
			default:
				break more
			}
		}
		s.storeQueued(s.ctx, batch)
	}
}

// drainQueue stores what is still queued at Close, for at most a second.
func (s *Sender) drainQueue(batch map[string][]Event) {
	for len(s.queue) > 0 {
		q := <-s.queue
		batch[q.app] = append(batch[q.app], q.ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.storeQueued(ctx, batch)
}

func (s *Sender) storeQueued(ctx context.Context, batch map[string][]Event) {
	for id, evs := range batch {
		delete(batch, id)
		a, ok := s.cfg.Apps.ByID(id)
		if !ok {
			s.m.dropped.WithLabelValues(id, "app_removed").Add(float64(len(evs)))
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, storeWait)
		err := s.store(sctx, a, evs)
		cancel()
		if err != nil {
			s.m.dropped.WithLabelValues(id, "store_failed").Add(float64(len(evs)))
			s.log.Warn("webhook: client_event/cache_miss webhooks not stored", "app", id, "events", len(evs), "err", err)
		}
	}
}

// cacheMissFilter remembers the channels a cache_miss was sent for.
type cacheMissFilter struct {
	window time.Duration
	mu     sync.Mutex
	seen   map[string]time.Time // app NUL channel -> when the last one was sent
}

// first reports whether a cache_miss for the channel is the first in the
// window, and remembers it. When the memory is full of recent channels,
// the event is dropped rather than the memory grown.
func (f *cacheMissFilter) first(appID, channel string, now time.Time) bool {
	k := appID + "\x00" + channel
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.seen[k]; ok && now.Sub(t) < f.window {
		return false
	}
	if len(f.seen) >= cacheMissKeys {
		for key, t := range f.seen {
			if now.Sub(t) >= f.window {
				delete(f.seen, key)
			}
		}
		if len(f.seen) >= cacheMissKeys {
			return false
		}
	}
	f.seen[k] = now
	return true
}
