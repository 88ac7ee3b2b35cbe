// Package bus owns the embedded NATS server and the node's connection to it,
// subject and stream names, publishing, live subscriptions and history
// reads. It knows nothing about WebSockets.
//
// Layers, bottom up: server.go runs the embedded nats-server (options built
// in one place); names.go is the subject scheme and the channel-token
// encoding; publish.go puts events into an app's JetStream stream (or, with
// streams off, straight onto the live subject); live.go keeps refcounted live
// subscriptions and hands messages to a Sink in per-shard batches.
//
// Every stored message is republished by the stream onto its live subject
// with headers Nats-Sequence (its serial) and Nats-Last-Sequence (the
// previous serial on the same channel), which the Sink sees as
// Message.Serial and Message.PrevSerial. A PrevSerial above the last serial
// delivered on the channel means a live message was lost (a stream leader
// change); the shard reads it from the stream first (gapfill.go).
//
// history.go reads a channel's stored events after a serial (History, for
// resume) with batched direct gets, and says whether the window has passed.
//
// cache.go keeps the last event of each cache channel in a second per-app
// stream, HERALD-CACHE_<app> on herald.<app>.cache.<tok>, read by LastEvent.
//
// disk.go watches the embedded store's disk: while it is full, publishes
// fail at once with ErrStoreFull (StoreState says why), and once it has
// room again the bus restarts JetStream if that is what recovers it.
//
// Where NATS runs is Config.Mode: an embedded server (the default; clustered
// in cluster.go), an existing deployment the node connects to instead
// (external.go), or an embedded server that is a leaf node of one (leaf.go).
// Subjects, streams and everything above the connection are the same in
// every mode.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// HeaderExclude is the message header carrying the socket id that must not
// receive the event (Pusher's socket_id exclusion).
const HeaderExclude = "Herald-Exclude"

// Message is one live event for local delivery. Payload is the stored bytes
// (a Pusher event JSON object); it and the Message are valid only during the
// Deliver call (copy to keep). App and Channel strings may be kept.
type Message struct {
	App        string
	Channel    string
	Serial     uint64 // stream sequence; 0 when streams are off
	PrevSerial uint64 // previous Serial on the same channel; 0 for the first or when streams are off
	Exclude    string // socket id to skip; "" for none
	Payload    []byte
}

// Sink receives live messages. Deliver and Flush for one shard are called
// from that shard's goroutine only, never concurrently for the same shard;
// different shards call concurrently. After a batch of Deliver calls (at
// most MaxDrain) Flush is called once. A Sink must not block for long: while
// it does, its shard's queue fills and further messages are dropped as a slow
// consumer. No call is made after Close returns.
type Sink interface {
	Deliver(shard int, m *Message)
	Flush(shard int)
}

// ObservingSink is a Sink whose Flush hands the writes on to goroutines of
// its own (the gateway's pollers, gateway/deliver.go), so that the batch is
// not yet written when Flush returns. For a batch DeliveryLatency samples,
// the bus calls FlushObserved instead of Flush, with the batch's stored
// time (Unix nanoseconds, health.go), and the Sink takes the sample once
// the last of those writes is done: the histogram then ends at the socket
// write whoever writes.
type ObservingSink interface {
	Sink
	FlushObserved(shard int, stored int64, obs Observer)
}

// Stats are counters for metrics.
type Stats struct {
	LiveSubscriptions  int    // NATS subscriptions on live subjects, including those in their grace period
	IdleSubscriptions  int    // of those, the ones with no local subscriber left (in grace)
	Delivered          uint64 // messages handed to Sink.Deliver
	SlowConsumerDrops  uint64 // messages dropped because a shard queue was full
	SlowConsumerEvents uint64 // times a subscription became a slow consumer
	Pending            int    // messages waiting in shard queues now (capacity Shards*ShardQueueLen)
	PublishRetries     uint64 // cluster mode: publications resent after an unanswered attempt (leader changes; cluster.go)
	GapRepairs         uint64 // live gaps found (a message's PrevSerial above the last delivered serial) and repaired from the stream (gapfill.go)
	GapMessages        uint64 // messages delivered by those repairs
	GapRepairFailures  uint64 // repairs that failed or fell short; the live message was delivered anyway
	LiveDuplicates     uint64 // live messages dropped because their serial was delivered already
}

// Bus is one node's connection to NATS. All methods are safe for concurrent use.
//
// Lock order (docs/locks.md): b.mu before b.slowMu; b.appsMu and
// b.disk.mu alone. No lock
// is held while the Sink is called or while waiting on the server.
type Bus struct {
	cfg   Config
	log   *slog.Logger
	sink  Sink
	osink ObservingSink // sink, when it is one (StartDelivery)
	srv   *server.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	epoch time.Time // monotonic base for idle times

	shards []chan *nats.Msg
	done   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool
	once   sync.Once
	// delivering is set once by StartDelivery, which also sets sink.
	delivering atomic.Bool

	mu        sync.Mutex // guards subs, idleQ, idleN
	subs      map[subKey]*liveSub
	idleQ     []idleRef // refs==0 transitions, oldest first; may hold stale entries
	idleN     int
	appsMu    sync.RWMutex
	apps      map[string]uint8 // apps whose streams have been ensured: streamMain, streamCache (publish.go)
	delivered atomic.Uint64

	slowMu     sync.Mutex // guards slowSubs, slowRetire
	slowSubs   map[*nats.Subscription]struct{}
	slowRetire uint64
	slowEvents atomic.Uint64
	pubRetries atomic.Uint64
	reconnects atomic.Uint64 // external mode (external.go)

	auth   *clientAuth  // the embedded server's logins (clientauth.go); nil without auth
	disk   diskState    // the disk watcher's view of the store (disk.go)
	hist   historyState // history reads and live gap repair (history.go, gapfill.go)
	starts subStarts    // when each live subscription was made (catchup.go)

	// routeAuth checks the routes that dial in (routeauth.go); nil without
	// Cluster.Passwords.
	routeAuth *routeAuth
}

// Start runs the embedded server, connects to it, ensures the streams of
// cfg.Apps (when streams are on) and starts the sweeper of idle live
// subscriptions; StartDelivery then starts handing live messages to a Sink
// (the two steps let the Sink, the gateway, be built on the running bus).
// In cluster mode it first
// waits, up to cfg.ReadyTimeout, until JetStream answers: a majority of the
// configured nodes must be starting meanwhile (cluster.go). In external mode
// it runs no server and connects to cfg.URLs instead, then waits the same
// way for their JetStream (external.go); in leaf mode the embedded server
// also solicits leaf connections to cfg.LeafRemotes (leaf.go).
func Start(cfg Config) (*Bus, error) {
	cfg = cfg.withDefaults()
	if cfg.DataDir == "" && cfg.Mode != ModeExternal {
		return nil, errors.New("bus: DataDir is required")
	}
	for _, app := range cfg.Apps {
		if !ValidApp(app) {
			return nil, fmt.Errorf("%w: %q", ErrInvalidApp, app)
		}
	}
	b := &Bus{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "bus"),
		epoch:    time.Now(),
		done:     make(chan struct{}),
		subs:     make(map[subKey]*liveSub),
		apps:     make(map[string]uint8),
		slowSubs: make(map[*nats.Subscription]struct{}),
	}
	b.disk.init()
	if err := checkMode(cfg); err != nil {
		return nil, err
	}
	var err error
	if cfg.Mode == ModeExternal {
		b.nc, err = b.connectExternal() // external.go
	} else {
		b.nc, err = b.startEmbedded()
	}
	if err != nil {
		return nil, err
	}
	jsOpts := []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncMaxPending(asyncMaxPending),
		jetstream.WithPublishAsyncTimeout(asyncAckTimeout),
	}
	if cfg.Mode == ModeExternal && cfg.JetStreamDomain != "" {
		b.js, err = jetstream.NewWithDomain(b.nc, cfg.JetStreamDomain, jsOpts...)
	} else {
		// Leaf mode too: the node's own requests reach its local JetStream
		// ($JS.API never crosses a leaf connection; leaf.go).
		b.js, err = jetstream.New(b.nc, jsOpts...)
	}
	if err != nil {
		b.nc.Close()
		b.shutdownServer()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	b.shards = make([]chan *nats.Msg, cfg.Shards)
	for i := range b.shards {
		b.shards[i] = make(chan *nats.Msg, ShardQueueLen)
	}
	b.wg.Add(1)
	go b.sweepLoop()
	if b.watchDisk() { // a full disk, and recovery from it (disk.go)
		b.checkDisk() // the state is known before the first publish
		b.wg.Add(1)
		go b.diskLoop()
	}

	ctx := context.Background()
	if cfg.Cluster.Enabled() { // wait for a meta leader, then the streams (cluster.go)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.ReadyTimeout)
		defer cancel()
		if err := b.waitJetStream(ctx); err != nil {
			b.Close()
			return nil, err
		}
	}
	if cfg.Mode == ModeExternal { // the same wait on someone else's JetStream (external.go)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.ReadyTimeout)
		defer cancel()
		if err := b.waitExternalJetStream(ctx); err != nil {
			b.Close()
			return nil, err
		}
	}
	for _, app := range cfg.Apps {
		if err := b.EnsureApp(ctx, app); err != nil {
			b.Close()
			return nil, err
		}
	}
	return b, nil
}

// StartDelivery starts the delivery goroutines, one per shard, which hand
// every live message to sink. Call it once, before the first Subscribe:
// live messages that arrive earlier wait in their shard's queue.
func (b *Bus) StartDelivery(sink Sink) error {
	if sink == nil {
		return errors.New("bus: nil sink")
	}
	if !b.delivering.CompareAndSwap(false, true) {
		return errors.New("bus: delivery already started")
	}
	b.mu.Lock() // against Close: no shard starts after it waited
	defer b.mu.Unlock()
	if b.closed.Load() {
		return ErrClosed
	}
	b.sink = sink
	b.osink, _ = sink.(ObservingSink)
	for i := range b.shards {
		b.wg.Add(1)
		go b.shardLoop(i)
	}
	return nil
}

// startEmbedded runs the embedded server (embedded and leaf mode) and
// returns the node's in-process connection to it. On error nothing is left
// running.
func (b *Bus) startEmbedded() (*nats.Conn, error) {
	cfg := b.cfg
	if err := checkClientPort(cfg); err != nil {
		return nil, err
	}
	if err := checkCluster(cfg); err != nil {
		return nil, err
	}
	if cfg.needsAuth() {
		cfg.internalPassword = newInternalPassword()
		b.cfg.internalPassword = cfg.internalPassword
		b.auth = newClientAuth(cfg)
		cfg.auth = b.auth
	}
	if cfg.Cluster.Enabled() && len(cfg.Cluster.Passwords) > 0 {
		b.routeAuth = newRouteAuth(cfg.Cluster.Passwords, b.log.Warn)
		cfg.routeAuth = b.routeAuth
	}
	cfg.serverError = b.onServerError // a failed store write (disk.go)
	srv, err := startServer(cfg)
	if err != nil {
		return nil, err
	}
	b.srv = srv
	connOpts := []nats.Option{
		nats.InProcessServer(srv),
		nats.Name(cfg.ServerName),
		nats.NoReconnect(),
		nats.ErrorHandler(b.onAsyncError),
	}
	if cfg.needsAuth() { // the server requires a user (clientport.go, cluster.go)
		connOpts = append(connOpts, nats.UserInfo(internalUser, cfg.internalPassword))
	}
	nc, err := nats.Connect("", connOpts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("bus: connect: %w", err)
	}
	return nc, nil
}

// Close stops delivery (no Sink call happens after it returns), closes the
// connection and shuts the embedded server down, waiting for it. It leaves
// no goroutine behind. Calling it again is a no-op.
func (b *Bus) Close() error {
	b.once.Do(func() {
		b.mu.Lock()
		b.closed.Store(true)
		b.mu.Unlock()
		close(b.done)
		b.wg.Wait()

		b.retireAllSlow()
		b.js.CleanupPublisher()
		if err := b.nc.FlushTimeout(time.Second); err != nil {
			b.log.Debug("bus: flush on close", "err", err)
		}
		b.nc.Close()
		b.shutdownServer()
	})
	return nil
}

// shutdownServer stops the embedded server; external mode has none.
func (b *Bus) shutdownServer() {
	if b.srv == nil {
		return
	}
	if b.cfg.Cluster.Enabled() { // leaderships handed over first (drain.go)
		shutdownLameDuck(b.srv)
		return
	}
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
}

// Shards is the number of delivery shards (and Sink shard indexes 0..Shards()-1).
func (b *Bus) Shards() int { return len(b.shards) }

// StreamEnabled reports whether publishes are stored in streams.
func (b *Bus) StreamEnabled() bool { return b.cfg.StreamEnabled }

// Server is the embedded server; nil in external mode.
func (b *Bus) Server() *server.Server { return b.srv }

// Mode is the bus mode: ModeEmbedded, ModeExternal or ModeLeaf.
func (b *Bus) Mode() string { return b.cfg.Mode }

// Conn is the node's connection: in-process to the embedded server, or to
// the external deployment in external mode. Do not close it.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream is the JetStream context on Conn.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Flush round-trips the connection: every Subscribe, Unsubscribe and core
// publish made before it has been processed by the server when it returns.
// Without a deadline on ctx it waits at most 10 s.
func (b *Bus) Flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if err := b.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("bus: flush: %w", err)
	}
	return nil
}

// Stats returns current counters. It is cheap enough for every metrics scrape.
func (b *Bus) Stats() Stats {
	b.mu.Lock()
	st := Stats{LiveSubscriptions: len(b.subs), IdleSubscriptions: b.idleN}
	b.mu.Unlock()
	st.Delivered = b.delivered.Load()
	st.SlowConsumerDrops = b.slowDrops()
	st.SlowConsumerEvents = b.slowEvents.Load()
	st.PublishRetries = b.pubRetries.Load()
	st.GapRepairs = b.hist.gapRepairs.Load()
	st.GapMessages = b.hist.gapMessages.Load()
	st.GapRepairFailures = b.hist.gapFailures.Load()
	st.LiveDuplicates = b.hist.duplicates.Load()
	for _, ch := range b.shards {
		st.Pending += len(ch)
	}
	return st
}

// onAsyncError is the connection's error handler (run on nats.go's callback
// goroutine). A slow-consumer event remembers the subscription so its drop
// count can be summed.
func (b *Bus) onAsyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if !errors.Is(err, nats.ErrSlowConsumer) || sub == nil {
		b.log.Warn("bus: nats async error", "err", err)
		return
	}
	b.slowEvents.Add(1)
	b.slowMu.Lock()
	b.slowSubs[sub] = struct{}{}
	b.slowMu.Unlock()
	b.log.Warn("bus: slow consumer, live messages dropped", "subject", sub.Subject)
}

// slowDrops is the number of messages dropped on full shard queues, summed
// over subscriptions that ever were slow consumers.
func (b *Bus) slowDrops() uint64 {
	b.slowMu.Lock()
	defer b.slowMu.Unlock()
	n := b.slowRetire
	for sub := range b.slowSubs {
		d, err := sub.Dropped()
		if err != nil {
			// Unsubscribed before its slow-consumer event arrived: its
			// count is gone, and so must be the entry.
			delete(b.slowSubs, sub)
			continue
		}
		n += uint64(d)
	}
	return n
}

// retireSlow keeps sub's drop count before sub is unsubscribed.
func (b *Bus) retireSlow(sub *nats.Subscription) {
	b.slowMu.Lock()
	defer b.slowMu.Unlock()
	if _, ok := b.slowSubs[sub]; !ok {
		return
	}
	if d, err := sub.Dropped(); err == nil && d > 0 {
		b.slowRetire += uint64(d)
	}
	delete(b.slowSubs, sub)
}

func (b *Bus) retireAllSlow() {
	b.slowMu.Lock()
	subs := make([]*nats.Subscription, 0, len(b.slowSubs))
	for sub := range b.slowSubs {
		subs = append(subs, sub)
	}
	b.slowMu.Unlock()
	for _, sub := range subs {
		b.retireSlow(sub)
	}
}
