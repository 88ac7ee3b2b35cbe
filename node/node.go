// Package node assembles one Herald node from its parts (bus, gateway, HTTP
// API) and owns their start and stop order. It knows no wire formats.
package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"herald/admin"
	"herald/api"
	"herald/app"
	"herald/bus"
	"herald/cluster"
	"herald/configs"
	"herald/console"
	"herald/debugtap"
	"herald/gateway"
	"herald/lifecycle"
	"herald/presence"
	"herald/webhook"
)

// Node is one running Herald node.
type Node struct {
	cfg *configs.Config
	log *slog.Logger

	ln    net.Listener
	gw    *gateway.Gateway
	bus   *bus.Bus
	http  *api.Server
	nats  *api.NATSAPI  // nil without a NATS client port
	admin *admin.Server // nil when admin.listen is off
	certs *certs        // the client port's TLS certificate; nil without TLS (tls.go)

	// What accepts on the client port, for herald_accept_pauses_total: the
	// listener fasthttp serves, and the pollers' own accept (nil on a TLS
	// port, where fasthttp accepts).
	fhAccept   *patientListener
	pollAccept *gateway.Listener

	tap     *debugtap.Tap    // debug events (console.go)
	console *console.Console // the debug console's endpoints and answers

	apps      *app.Registry
	registry  *registrySource // apps_source: registry (apps.go); nil with apps from the config
	lifecycle *lifecycle.Decider
	latency   prometheus.Histogram // publish-to-socket-write, sampled by the bus (metrics.go)
	webhooks  *webhook.Sender      // nil with streams off

	cl      *cluster.Cluster // nil on a single node
	gossip  *presence.Gossip
	queries *bus.ChannelQueries // cluster-wide channel counts; nil on a single node

	outbox webhook.Outbox    // where webhook events are written; nil: no webhooks
	ledger *lifecycle.Ledger // nil without an outbox (ledger.go)

	serveErr  chan error
	stopOnce  sync.Once
	stopErr   error
	done      chan struct{} // closed when stopped (drain.go)
	drainOnce sync.Once     // StartDrain
	drain     drainState

	ops ops // config source, reload and status (reload.go, status.go)
}

// Start brings a node up: data dir, client listener, gateway, bus, then the
// HTTP server. It fails fast with one error that says what could not start.
// A node started this way reloads only through Reload (no config source).
func Start(cfg *configs.Config, log *slog.Logger) (*Node, error) {
	return StartWith(cfg, log, Source{})
}

// StartWith is Start with the config's source, which POST /reload, SIGHUP
// and herald status use (reload.go).
func StartWith(cfg *configs.Config, log *slog.Logger, src Source) (*Node, error) {
	if log == nil {
		log = slog.Default()
	}
	n := &Node{cfg: cfg, log: log, serveErr: make(chan error, 1), done: make(chan struct{})}
	n.ops.init(cfg, src)
	if err := checkDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	n.fhAccept = &patientListener{Listener: ln, log: log}
	n.ln = n.fhAccept
	if n.ln, err = n.listenTLS(n.ln); err != nil { // tls.go
		_ = ln.Close()
		return nil, err
	}
	if err := n.startAdmin(); err != nil {
		_ = ln.Close()
		return nil, err
	}
	if err := n.startParts(); err != nil {
		n.closeParts()
		return nil, err
	}
	if !n.cfg.TLS.Enabled() {
		// The pollers accept on the client port and upgrade /app/ sockets
		// themselves; the rest reaches fasthttp through their listener
		// (gateway/accept.go). A TLS port keeps fasthttp's accept: its
		// sockets are upgraded after crypto/tls (gateway/tlsbridge.go).
		gl, err := n.gw.Listen(ln)
		if err != nil {
			_ = ln.Close()
			n.closeParts()
			return nil, err
		}
		n.pollAccept, n.fhAccept = gl, &patientListener{Listener: gl, log: log}
		n.ln = n.fhAccept
	}
	n.registryLive()
	go func() { n.serveErr <- n.http.Serve(n.ln) }()
	n.serveAdmin()
	n.http.SetReady(true)
	log.Info("herald node started", "listen", ln.Addr().String(), "admin", n.AdminURL(), "data_dir", cfg.DataDir,
		"apps", n.apps.Table().Len(), "apps_source", cfg.AppsSource, "stream", cfg.Bus.Stream.IsEnabled(), "nats", n.bus.ClientURL())
	return n, nil
}

func (n *Node) startParts() error {
	cfg := n.cfg
	if cfg.Cluster.Enabled() {
		if err := n.startCluster(); err != nil {
			return err
		}
	}
	if n.fromRegistry() {
		n.apps = app.NewRegistry(nil) // filled from the bucket once the bus runs (apps.go)
	} else {
		n.apps = app.NewRegistry(cfg.Apps)
	}
	if cfg.Bus.ClientSharedInbox && cfg.Bus.Mode != configs.BusExternal {
		n.log.Warn("config: bus.client_shared_inbox is obsolete and ignored: every app's NATS users have an account of their own, where the default _INBOX. prefix works and is private (docs/nats.md)")
	}
	n.latency = newDeliveryLatency()
	b, err := bus.Start(n.busConfig())
	if err != nil {
		return err
	}
	n.bus = b
	if n.fromRegistry() {
		if err := n.startRegistry(); err != nil {
			return err
		}
	}
	reg := prometheus.NewRegistry()
	n.startTap()                                 // before the webhook sender, which reports its deliveries to it
	if err := n.startWebhooks(reg); err != nil { // node/webhooks.go
		return err
	}

	n.lifecycle = lifecycle.New(n.isOwner())
	n.lifecycle.Subscribe(b.PublishMemberEvent) // NATS presence subjects (docs/nats.md)
	n.lifecycle.Subscribe(n.tap.Lifecycle)      // debug console (docs/console.md)
	gcfg := gateway.Config{
		Apps:            n.apps,
		ActivityTimeout: cfg.Gateway.ActivityTimeout.D(),
		PongTimeout:     cfg.Gateway.PongTimeout.D(),
		MaxMessageBytes: cfg.Gateway.MaxMessageBytes,
		WriteQueueBytes: cfg.Gateway.WriteQueueBytes,
		Pollers:         cfg.Gateway.Pollers,
		AcceptRate:      cfg.Gateway.AcceptRate,
		RequireProtocol: cfg.Gateway.RequireProtocol,
		UserAuthTimeout: userAuthTimeout,
		Logger:          n.log.With("part", "gateway"),
		Bus:             b,
		Shards:          b.Shards(),
		Publisher:       b,
		Cache:           b,
		NewPresence:     n.presenceFactory(),
		Lifecycle:       n.lifecycle,
		Webhooks:        n.webhookSink(),
		Tap:             n.tap,

		MaxConnectionsPerIP: cfg.Gateway.MaxConnectionsPerIP,
		AcceptRatePerIP:     cfg.Gateway.AcceptRatePerIP,
		TrustedProxies:      trustedProxies(cfg.Gateway.TrustedProxies),

		HandshakeTimeout: cfg.Gateway.HandshakeTimeout.D(),
		MaxHeaderBytes:   cfg.HTTP.ReadBufferBytes,
	}
	if b.StreamEnabled() {
		gcfg.Replayer = b
	}
	gw, err := gateway.New(gcfg)
	if err != nil {
		return err
	}
	n.gw = gw
	if err := b.StartDelivery(gw); err != nil {
		return err
	}
	if err := n.startLedger(); err != nil {
		return err
	}

	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.registerMetrics(reg)
	var counts api.Counts = gw
	var publishTimeout time.Duration
	if n.cl != nil {
		cl := n.cl
		if n.queries, err = b.ServeChannelQueries(cl.LocalName(), gw, func() int { return len(cl.Members()) }); err != nil {
			return fmt.Errorf("node: cluster queries: %w", err)
		}
		counts = n.queries
		publishTimeout = clusterPublishTimeout
	}
	n.http = api.New(api.Config{
		Apps:           n.apps,
		Upgrade:        gw.ServeUpgrade,
		Publisher:      b,
		Counts:         counts,
		Members:        gw,
		PublishTimeout: publishTimeout,
		Cache:          b,
		Registry:       reg,
		Logger:         n.log.With("part", "api"),
		MaxBodyBytes:   cfg.HTTP.MaxBodyBytes,
		ReadBufferSize: cfg.HTTP.ReadBufferBytes,
		Tap:            n.tap,

		HandshakeTimeout: cfg.Gateway.HandshakeTimeout.D(),
		NotReady:         n.storeNotReady, // a full disk (node/disk.go)
	})
	if err := n.startConsole(); err != nil {
		return err
	}
	return n.startNATSAPI(reg)
}

// busConfig is the bus's part of the config: streams, windows, the NATS
// client port and its app users, the cluster (cluster.go) and where NATS
// runs (busmode.go).
func (n *Node) busConfig() bus.Config {
	cfg := n.cfg
	bcfg := bus.Config{
		DataDir:           cfg.DataDir,
		StreamEnabled:     cfg.Bus.Stream.IsEnabled(),
		MaxAge:            cfg.Bus.Stream.MaxAge.D(),
		MaxMsgsPerChannel: cfg.Bus.Stream.MaxMsgsPerChannel,
		AppRegistry:       n.apps,
		SyncAlways:        cfg.Bus.Stream.Sync == configs.SyncAlways,
		Shards:            min(cfg.Bus.Shards, 64),
		CacheTTL:          cfg.Bus.CacheTTL.D(),
		Logger:            n.log.With("part", "bus"),
		DeliveryLatency:   n.latency,

		ClientListen:      cfg.Bus.ClientListen,
		ClientSharedInbox: cfg.Bus.ClientSharedInbox,
	}
	clusterBus(cfg.Cluster, &bcfg)
	busMode(cfg.Bus, &bcfg)
	return bcfg
}

// startNATSAPI serves the API subjects to NATS clients (docs/nats.md) when
// the bus has a client port, and in external and leaf mode (busmode.go).
func (n *Node) startNATSAPI(reg *prometheus.Registry) error {
	if !natsAPIWanted(n.cfg.Bus) {
		return nil
	}
	a, err := api.StartNATSAPI(api.NATSAPIConfig{
		Bus:      n.bus,
		Server:   n.http,
		Apps:     n.apps,
		Registry: reg,
		Logger:   n.log.With("part", "natsapi"),
	})
	if err != nil {
		return err
	}
	n.nats = a
	return nil
}

// trustedProxies parses gateway.trusted_proxies (validated at load).
func trustedProxies(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := configs.ParsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// checkDataDir creates the data dir and proves it writable.
func checkDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(filepath.Clean(name))
}

// Addr is the address the client port listens on.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// Gateway returns the node's WebSocket edge.
func (n *Node) Gateway() *gateway.Gateway { return n.gw }

// Lifecycle returns the node's channel lifecycle events: subscribe to get
// the transitions of the channels this node owns (lifecycle.Decider).
func (n *Node) Lifecycle() *lifecycle.Decider { return n.lifecycle }

// Bus returns the node's bus.
func (n *Node) Bus() *bus.Bus { return n.bus }

// NATSURL is where NATS clients reach the node (nats://host:port), or ""
// without a client port.
func (n *Node) NATSURL() string { return n.bus.ClientURL() }

// Err receives the HTTP server's error if it stops serving on its own.
func (n *Node) Err() <-chan error { return n.serveErr }

func (n *Node) closeParts() {
	n.stopRegistry() // no registry change applies while the parts stop
	// The console's streams end before the admin listener waits for them.
	n.stopConsole()
	if n.nats != nil { // before the bus: it publishes through the bus's connection
		if err := n.nats.Stop(context.Background()); err != nil {
			n.log.Warn("nats api stop", "err", err)
		}
	}
	if n.gw != nil {
		n.gw.Close() // its sockets' leaves still emit: the node owns its channels until it leaves
	}
	n.lifecycle.Close()
	n.ledger.Close()       // what it decided and did not clear stays pending in the records, for the next owner
	if n.webhooks != nil { // after what writes to it, before the bus
		n.webhooks.Close()
	}
	n.queries.Stop()
	n.stopCluster()
	if n.bus != nil {
		if err := n.bus.Close(); err != nil {
			n.log.Warn("bus close", "err", err)
		}
	}
	if n.ln != nil {
		_ = n.ln.Close()
	}
	if n.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.admin.Close(ctx); err != nil {
			n.log.Warn("admin close", "err", err)
		}
	}
}

// userAuthTimeout is how long connections of apps with user_authentication
// have to sign in; a variable so that tests need not wait 30 s.
var userAuthTimeout = app.UserAuthenticationTimeout
