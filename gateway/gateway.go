// Package gateway owns Herald's WebSocket edge: the client port's accept loop
// (the pollers accept and upgrade /app/ sockets themselves and hand the rest
// to the HTTP server, accept.go), the upgrade of hijacked fasthttp
// connections, the epoll pollers, connection state, the local channel index,
// fan-out (deliver.go), keep-alive probes and per-socket write queues.
//
// It is three layers, each testable alone: frame decoding over bytes
// (frame.go), the epoll poller and write path (poller.go, conn.go), and the
// Pusher protocol on top (pusher.go). No goroutine belongs to a connection:
// a few pollers accept, read and write every socket; the bus's delivery
// shards hand each poller its share of a fan-out, and every frame queued to
// a socket in one delivery unit goes out in one writev. The one exception is
// wss:// served directly: a TLS socket is bridged to the poller by two
// goroutines (tlsbridge.go), the documented slower path.
//
// The epoll layer is written by hand over golang.org/x/sys/unix because the
// libraries that do it either own the listener (cloudwego/netpoll) or are not
// available from the module proxy (mailru/easygo, lesismal/nbio).
package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"herald/app"
	"herald/bus"
	"herald/debugtap"
	"herald/lifecycle"
	"herald/presence"
	"herald/protocol"
)

// Bus is what the edge needs from the message bus: reference-counted
// interest in a channel's live messages. Both calls must return quickly.
type Bus interface {
	Subscribe(app, channel string)
	Unsubscribe(app, channel string)
}

// Publisher stores client events without waiting for an acknowledgement.
type Publisher interface {
	PublishAsync(p bus.Publication) error
}

// Config sets up a Gateway. The parts it depends on are fields, set by the
// node at construction (node/node.go); the optional ones say what their
// absence means.
type Config struct {
	Apps            *app.Registry // required: connections find their app by key here
	ActivityTimeout time.Duration // sent to clients; silent sockets are probed after it
	PongTimeout     time.Duration // a probed socket that stays silent this long is closed with 4201
	MaxMessageBytes int           // largest client message (and frame)
	WriteQueueBytes int           // per-socket outbound bound; past it the socket is a slow consumer
	Pollers         int           // 0: GOMAXPROCS
	RequireProtocol bool          // a missing ?protocol= closes with 4008 instead of meaning 7
	SocketIDNode    uint64        // the first part of socket ids; 0 picks one at random
	UserAuthTimeout time.Duration // apps with user_authentication: sign in within this or 4009; 0: app.UserAuthenticationTimeout (30 s)
	AcceptRate      int           // new sockets a second (gateway.accept_rate); past it they are closed with 4100; 0: no limit (admission.go)
	Logger          *slog.Logger
	// For the sockets the pollers accept themselves (Listen, accept.go):
	// HandshakeTimeout is how long one may take to send its request head
	// (gateway.handshake_timeout; 0: 5 s), MaxHeaderBytes the largest head
	// upgraded on a poller; a larger one goes to the HTTP server, whose
	// read buffer (http.read_buffer_bytes) it should be (0: 16384).
	HandshakeTimeout time.Duration
	MaxHeaderBytes   int

	// Per source address (limits.go, docs/limits.md); 0 is off.
	MaxConnectionsPerIP int            // open sockets per address; over it 4100
	AcceptRatePerIP     int            // new sockets per second per address (a burst of as many); over it 4100
	TrustedProxies      []netip.Prefix // peers whose X-Forwarded-For names the client

	// Bus is required: the live interest behind the local channel index.
	// The bus delivers into the gateway through Deliver and Flush, on
	// Shards delivery shards (bus.Bus.Shards, at most 64).
	Bus    Bus
	Shards int
	// Publisher relays client events; nil: client events are refused.
	Publisher Publisher
	// Cache serves cache channels; nil: every subscriber gets
	// pusher:cache_miss.
	Cache CacheReader
	// Replayer serves herald_resume; nil: resumes are answered
	// resume_failed "disabled" (streams off).
	Replayer Replayer
	// NewPresence builds the presence registry, reporting changes to the
	// listener it is given; nil means a single-node presence.Local. A cluster
	// passes the gossiped registry here.
	NewPresence func(presence.Listener) presence.Registry
	// Lifecycle receives every transition the presence registry reports,
	// to emit the channel lifecycle events this node owns; nil: none.
	Lifecycle *lifecycle.Decider
	// Webhooks takes the client_event and cache_miss webhooks of this
	// node's sockets (webhook.Sender); nil: none.
	Webhooks WebhookSink
	// Tap gets the debug events of connections, subscriptions, client
	// events and resumes (docs/console.md); nil: none.
	Tap *debugtap.Tap
}

// WebhookSink takes the webhooks the edge produces. It is called only for
// apps with a webhook that wants the event (app.App.WantsWebhook), from a
// poller or a cache worker: both methods must return at once.
type WebhookSink interface {
	// ClientEvent: a client event was accepted on channel. data is its
	// "data" as the client sent it (raw JSON, nil when absent); userID is
	// the sender's presence user id on presence channels, else "".
	ClientEvent(a *app.App, channel, event string, data []byte, socketID, userID string)
	// CacheMiss: a subscriber of cache channel got pusher:cache_miss.
	CacheMiss(a *app.App, channel string)
}

// Stats are the gateway's counters.
type Stats struct {
	Connections   int64
	Connects      uint64
	MessagesIn    uint64
	Deliveries    uint64
	Writes        uint64
	SlowConsumers uint64
	// AdmissionCloses are sockets closed with 4100 at the upgrade because
	// they came over gateway.accept_rate.
	AdmissionCloses uint64
}

type counters struct {
	connections       atomic.Int64
	connects          atomic.Uint64
	messagesIn        atomic.Uint64
	deliveries        atomic.Uint64
	writes            atomic.Uint64
	slowConsumers     atomic.Uint64
	admission         atomic.Uint64
	handoffs          atomic.Uint64 // sockets the pollers handed to the HTTP server (accept.go)
	handshakeTimeouts atomic.Uint64 // sockets the pollers closed with a 408 (accept.go)
}

// sharedFrames are frames every connection may be sent; built once.
type sharedFrames struct {
	ping, pong []byte
}

// Gateway is the WebSocket edge of one node.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	appConns sync.Map // app id -> *atomic.Int64: the app's open connections on this node
	ids      *protocol.SocketIDs
	hub      *hub
	pollers  []*poller
	fds      []atomic.Pointer[Conn]
	frames   sharedFrames
	stats    counters
	metrics  metrics // operator metrics (metrics.go)
	ips      ipLimits
	connPeak atomic.Int64 // about the most open sockets since the last trim (limits.go)

	presence   presence.Registry
	users      userIndex
	cacheJobs  chan cacheJob
	replayJobs chan replayJob
	counts     counts
	stop       chan struct{}

	// out[i] are delivery shard i's batches, one per poller, filled by
	// Deliver and handed over by Flush; only shard i's goroutine touches
	// them (deliver.go).
	out     [][]*batch
	batches sync.Pool // of *batch
	marks   sync.Pool // of *flushMark
	// outstanding[i] counts shard i's batches handed to a poller and not
	// yet delivered (Deliver's direct path waits for 0).
	outstanding []atomic.Int64

	closeOnce sync.Once
	wg        sync.WaitGroup
	tls       bridges // wss:// sockets' bridges (tlsbridge.go)
	draining  atomic.Bool
	accept    atomic.Pointer[tokenBucket] // nil: no admission limit; swapped by SetAcceptRate
}

// New starts a gateway's pollers and workers. Hand it to the bus as its
// Sink (bus.Bus.StartDelivery) before serving upgrades.
func New(cfg Config) (*Gateway, error) {
	if cfg.Apps == nil || cfg.Bus == nil {
		return nil, errors.New("gateway: Apps and Bus are required")
	}
	if cfg.Shards <= 0 || cfg.Shards > 64 {
		return nil, fmt.Errorf("gateway: %d delivery shards (1 to 64)", cfg.Shards)
	}
	if cfg.Pollers <= 0 {
		cfg.Pollers = runtime.GOMAXPROCS(0)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 5 * time.Second
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 16384
	}
	if cfg.UserAuthTimeout <= 0 {
		cfg.UserAuthTimeout = app.UserAuthenticationTimeout
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("gateway: getrlimit: %w", err)
	}
	maxFDs := lim.Cur
	if maxFDs > 1<<24 {
		maxFDs = 1 << 24
	}
	g := &Gateway{
		cfg:  cfg,
		log:  cfg.Logger,
		ids:  protocol.NewSocketIDs(cfg.SocketIDNode),
		hub:  newHub(),
		fds:  make([]atomic.Pointer[Conn], maxFDs),
		stop: make(chan struct{}),
	}
	g.SetAcceptRate(cfg.AcceptRate)
	g.ips = ipLimits{maxOpen: int32(min(cfg.MaxConnectionsPerIP, 1<<30)), rate: float64(cfg.AcceptRatePerIP),
		burst: float64(max(cfg.AcceptRatePerIP, 1)), m: make(map[ipKey]*ipEntry)}
	g.frames.ping = appendFrame(nil, ws.OpText, protocol.AppendPing(nil))
	g.frames.pong = appendFrame(nil, ws.OpText, protocol.AppendPong(nil))
	for i := range cfg.Pollers {
		p, err := newPoller(g, i)
		if err != nil {
			for _, p := range g.pollers {
				_ = unix.Close(p.epfd)
				_ = unix.Close(p.wakefd)
			}
			return nil, err
		}
		g.pollers = append(g.pollers, p)
	}
	g.out = make([][]*batch, cfg.Shards)
	g.outstanding = make([]atomic.Int64, cfg.Shards)
	for i := range g.out {
		g.out[i] = make([]*batch, len(g.pollers))
	}
	for _, p := range g.pollers {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			p.run()
		}()
	}
	g.wg.Add(1)
	go g.countLoop()
	if g.cfg.Cache != nil { // cache lookups wait on the bus, never on a poller
		g.cacheJobs = make(chan cacheJob, cacheQueueLen)
		g.goN(cacheWorkers, g.cacheWorker)
	}
	// Resume is on with a Replayer; without one, subscribes with
	// herald_resume are answered resume_failed "disabled" and go live.
	if g.cfg.Replayer != nil {
		g.replayJobs = make(chan replayJob, replayQueueLen)
		g.goN(replayWorkers, g.replayWorker)
	}
	// Last: a gossiped registry may report remote changes at once, from its
	// own goroutines, which must see a finished gateway.
	if cfg.NewPresence != nil {
		g.presence = cfg.NewPresence(g.onPresenceChange)
	} else {
		g.presence = presence.NewLocal(g.onPresenceChange)
	}
	return g, nil
}

// goN runs n copies of fn, each counted in g.wg until it returns.
func (g *Gateway) goN(n int, fn func()) {
	for range n {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			fn()
		}()
	}
}

// connCounter is the counter of an app's open connections on this node; it
// outlives reloads of the app table.
func (g *Gateway) connCounter(appID string) *atomic.Int64 {
	if v, ok := g.appConns.Load(appID); ok {
		return v.(*atomic.Int64)
	}
	v, _ := g.appConns.LoadOrStore(appID, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// SubscriptionCount returns how many of this node's connections are
// subscribed to the channel.
func (g *Gateway) SubscriptionCount(app, channel string) int { return g.hub.count(app, channel) }

// Channels calls fn for each channel of the app that has subscribers on this
// node.
func (g *Gateway) Channels(app string, fn func(name string, subscriptions int)) {
	g.hub.channels(app, fn)
}

// Stats returns the gateway's counters.
func (g *Gateway) Stats() Stats {
	return Stats{
		Connections:     g.stats.connections.Load(),
		Connects:        g.stats.connects.Load(),
		MessagesIn:      g.stats.messagesIn.Load(),
		Deliveries:      g.stats.deliveries.Load(),
		Writes:          g.stats.writes.Load(),
		SlowConsumers:   g.stats.slowConsumers.Load(),
		AdmissionCloses: g.stats.admission.Load(),
	}
}

// Deliver hands a live message to the pollers that have local subscribers
// of its channel. The WebSocket frame is built once and shared. Called by
// the bus's delivery shard goroutine, which copies the subscribers of each
// poller into that poller's batch (hub.snapshot) and writes nothing: Flush
// hands the batches over, and each poller queues the frames to its own
// sockets and writes each of them once (poller.deliver), so the write of
// one event to 10,000 sockets runs on every poller at once, and a socket
// receiving several events still gets them in one writev. Lock order:
// docs/locks.md (hub shard; the pollers take Conn.mu later, alone).
func (g *Gateway) Deliver(shard int, m *bus.Message) {
	out := g.out[shard]
	for i, b := range out {
		if b == nil {
			out[i] = g.newBatch()
		}
	}
	frame := eventFrame(m.Payload, m.Serial)
	var excl protocol.SocketID
	if m.Exclude != "" {
		excl, _ = protocol.ParseSocketID(m.Exclude)
	}
	// Nothing of this shard's is waiting anywhere: an event for a small
	// channel may be written here at once, as the shards wrote before
	// (one thread hop less), without passing one of this channel's
	// earlier events, which are all out already.
	quiet := g.outstanding[shard].Load() == 0
	for _, b := range out {
		quiet = quiet && len(b.msgs) == 0
	}
	n := g.hub.snapshot(m.App, m.Channel, m.Serial, out)
	if n == 0 {
		return
	}
	g.stats.deliveries.Add(uint64(n))
	g.metrics.app(m.App).deliveries.Add(uint64(n))
	if quiet && n <= directMax {
		for _, b := range out {
			for _, c := range b.conns {
				if c.id == excl && excl != (protocol.SocketID{}) {
					continue
				}
				c.mu.Lock()
				if c.state() == stateOpen && (c.replays == nil || !c.holdLocked(m.Channel, m.Serial, m.PrevSerial, frame)) {
					c.writeLocked(frame)
				}
				c.mu.Unlock()
			}
			clear(b.conns)
			b.conns = b.conns[:0]
		}
		return
	}
	for _, b := range out {
		if end := len(b.conns); end > b.marked {
			b.msgs = append(b.msgs, delivery{frame: frame, channel: m.Channel, serial: m.Serial, prev: m.PrevSerial, excl: excl, end: end})
			b.marked = end
		}
	}
}

// Flush hands what Deliver batched since the last Flush of this shard to
// the pollers.
func (g *Gateway) Flush(shard int) { g.FlushObserved(shard, 0, nil) }

// FlushObserved is Flush for a batch the bus samples (bus.ObservingSink):
// obs gets the seconds from stored (Unix nanoseconds) to the last poller
// having written its part, or to now when the shard wrote it all itself.
func (g *Gateway) FlushObserved(shard int, stored int64, obs bus.Observer) {
	var mark *flushMark
	if obs != nil {
		mark = g.newMark(stored, obs)
	}
	out := g.out[shard]
	for i, b := range out {
		if b == nil || len(b.msgs) == 0 {
			continue
		}
		b.shard = shard
		if mark != nil {
			mark.left.Add(1)
			b.mark = mark
		}
		g.outstanding[shard].Add(1)
		if g.pollers[i].deliver(b) {
			out[i] = nil
		} else {
			g.outstanding[shard].Add(-1)
			b.mark = nil
			mark.done(g) // nil-safe
		}
	}
	mark.done(g) // the flush's own reference
}

// eventFrame builds the WebSocket frame of a stored event: the Pusher JSON
// object with the serial added as a last member when there is one.
func eventFrame(payload []byte, serial uint64) []byte {
	if serial == 0 {
		return textFrame(payload)
	}
	body := bytes.TrimRight(payload, " \t\r\n")
	if len(body) == 0 || body[len(body)-1] != '}' {
		return textFrame(payload)
	}
	body = body[:len(body)-1]
	var num [20]byte
	sn := strconv.AppendUint(num[:0], serial, 10)
	n := len(body) + len(`,"serial":}`) + len(sn)
	f := make([]byte, 0, frameHeaderSize(n)+n)
	f = appendFrameHeader(f, ws.OpText, n)
	f = append(f, body...)
	f = append(f, `,"serial":`...)
	f = append(f, sn...)
	return append(f, '}')
}

// connClosed forgets a released connection's subscriptions and counts.
// Called by its poller.
func (g *Gateway) connClosed(c *Conn) {
	g.leaveAll(c)
	g.releaseAddr(c)
	if c.userID() != "" {
		g.users.remove(c)
	}
	if c.counted {
		g.connCounter(c.app.ID).Add(-1)
	}
	g.stats.connections.Add(-1)
	g.metrics.disconnected(c)
	g.tapLost(c)
}

// leaveAll ends every subscription of a connection that is closing or
// closed. Poller only.
func (g *Gateway) leaveAll(c *Conn) {
	for _, s := range c.subs {
		g.leave(c, s)
	}
	c.subs = nil
}

// Drain makes new upgrades fail with 4200 (reconnect elsewhere) while the node
// shuts down.
func (g *Gateway) Drain() { g.draining.Store(true) }

// Close closes every connection with 4200 and stops the pollers.
func (g *Gateway) Close() {
	g.closeOnce.Do(func() {
		g.draining.Store(true)
		for _, p := range g.pollers {
			if p != nil {
				p.stop()
			}
		}
		close(g.stop)
		if g.cacheJobs != nil {
			close(g.cacheJobs)
		}
		if g.replayJobs != nil {
			close(g.replayJobs)
		}
		g.wg.Wait()
		g.tls.closeAll()
	})
}
