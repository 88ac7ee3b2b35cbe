// Package node assembles one Herald node from its parts (bus, gateway, HTTP
// API) and owns their start and stop order. It knows no wire formats.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"herald/api"
	"herald/bus"
	"herald/cluster"
	"herald/configs"
	"herald/gateway"
	"herald/presence"
	"herald/protocol"
)

// Node is one running Herald node.
type Node struct {
	cfg *configs.Config
	log *slog.Logger

	ln   net.Listener
	gw   *gateway.Gateway
	bus  *bus.Bus
	http *api.Server
	nats *api.NATSAPI // nil without a NATS client port

	cl     *cluster.Cluster // nil on a single node
	gossip *presence.Gossip
	sys    *sysResponder

	serveErr chan error
	stopOnce sync.Once
	stopErr  error
}

// Start brings a node up: data dir, client listener, gateway, bus, then the
// HTTP server. It fails fast with one error that says what could not start.
func Start(cfg *configs.Config, log *slog.Logger) (*Node, error) {
	if log == nil {
		log = slog.Default()
	}
	n := &Node{cfg: cfg, log: log, serveErr: make(chan error, 1)}
	if err := checkDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	n.ln = &patientListener{Listener: ln, log: log}
	if err := n.startParts(); err != nil {
		n.closeParts()
		return nil, err
	}
	go func() { n.serveErr <- n.http.Serve(n.ln) }()
	n.http.SetReady(true)
	log.Info("herald node started", "listen", ln.Addr().String(), "data_dir", cfg.DataDir,
		"apps", len(cfg.Apps), "stream", cfg.Bus.Stream.IsEnabled(), "nats", n.bus.ClientURL())
	return n, nil
}

func (n *Node) startParts() error {
	cfg := n.cfg
	if cfg.Cluster.Enabled() {
		if err := n.startCluster(); err != nil {
			return err
		}
	}
	apps := gatewayApps(cfg.Apps)
	gw, err := gateway.New(gateway.Config{
		Apps:            apps,
		ActivityTimeout: cfg.Gateway.ActivityTimeout.D(),
		PongTimeout:     cfg.Gateway.PongTimeout.D(),
		MaxMessageBytes: cfg.Gateway.MaxMessageBytes,
		WriteQueueBytes: cfg.Gateway.WriteQueueBytes,
		Pollers:         cfg.Gateway.Pollers,
		RequireProtocol: cfg.Gateway.RequireProtocol,
		Logger:          n.log.With("part", "gateway"),
		NewPresence:     n.presenceFactory(),
		IsOwner:         n.isOwner(),
	})
	if err != nil {
		return err
	}
	n.gw = gw

	ids := make([]string, len(apps))
	for i, a := range apps {
		ids[i] = a.ID
	}
	bcfg := bus.Config{
		DataDir:           cfg.DataDir,
		StreamEnabled:     cfg.Bus.Stream.IsEnabled(),
		MaxAge:            cfg.Bus.Stream.MaxAge.D(),
		MaxMsgsPerChannel: cfg.Bus.Stream.MaxMsgsPerChannel,
		AppWindows:        appWindows(cfg.Apps),
		SyncAlways:        cfg.Bus.Stream.Sync == configs.SyncAlways,
		Shards:            min(cfg.Bus.Shards, 64),
		CacheTTL:          cfg.Bus.CacheTTL.D(),
		Apps:              ids,
		Logger:            n.log.With("part", "bus"),

		ClientListen:      cfg.Bus.ClientListen,
		ClientUsers:       clientUsers(cfg.Apps),
		ClientSharedInbox: cfg.Bus.ClientSharedInbox,
	}
	clusterBus(cfg.Cluster, &bcfg)
	busMode(cfg.Bus, &bcfg) // bus.mode: external or leaf NATS (busmode.go)
	b, err := bus.Start(bcfg, gw)
	if err != nil {
		return err
	}
	n.bus = b
	gw.AttachBus(b, b.Shards())
	if b.StreamEnabled() {
		gw.AttachReplayer(replayer{b})
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerMetrics(reg, gw, b)
	var channels api.Channels = localChannels{gw}
	var publishTimeout time.Duration
	if n.cl != nil {
		if n.sys, err = startSysResponder(n.cl.LocalName(), gw, b.Conn(), n.log.With("part", "sys")); err != nil {
			return fmt.Errorf("node: cluster queries: %w", err)
		}
		cl := n.cl
		channels = clusterChannels{gw: gw, nc: b.Conn(), members: func() int { return len(cl.Members()) }, log: n.log.With("part", "query")}
		publishTimeout = clusterPublishTimeout
	}
	n.http = api.New(api.Config{
		Gateway:        gw,
		Publisher:      b,
		Channels:       channels,
		PublishTimeout: publishTimeout,
		Cache:          cacheQueries{b},
		Registry:       reg,
		Logger:         n.log.With("part", "api"),
		MaxBodyBytes:   cfg.HTTP.MaxBodyBytes,
		ReadBufferSize: cfg.HTTP.ReadBufferBytes,
	})
	return n.startNATSAPI(reg)
}

// startNATSAPI serves the API subjects to NATS clients (docs/nats.md) when
// the bus has a client port, and in external and leaf mode (busmode.go).
func (n *Node) startNATSAPI(reg *prometheus.Registry) error {
	if !natsAPIWanted(n.cfg.Bus) {
		return nil
	}
	a, err := api.StartNATSAPI(api.NATSAPIConfig{
		Conn:     n.bus.Conn(),
		Server:   n.http,
		Apps:     n.gw.AppByID,
		Registry: reg,
		Logger:   n.log.With("part", "natsapi"),
	})
	if err != nil {
		return err
	}
	n.nats = a
	return nil
}

// clientUsers are the apps' NATS credentials: user/password (default: app
// id and secret) and, when set, an nkey.
func clientUsers(apps []configs.App) []bus.ClientUser {
	out := make([]bus.ClientUser, len(apps))
	for i := range apps {
		a := &apps[i]
		out[i] = bus.ClientUser{App: a.ID, User: a.NATSUser(), Password: a.NATSPassword(), Nkey: a.NATS.Nkey}
	}
	return out
}

// gatewayApps converts configured apps to the edge's view of them.
func gatewayApps(in []configs.App) []*gateway.App {
	out := make([]*gateway.App, len(in))
	for i := range in {
		a := &in[i]
		out[i] = &gateway.App{
			ID:             a.ID,
			Key:            a.Key,
			Secret:         a.Secret,
			Enabled:        a.IsEnabled(),
			ClientEvents:   a.ClientEvents,
			MaxConnections: a.MaxConnections,
			Limits: protocol.Limits{
				MaxDataBytes:   a.MaxEventDataBytes,
				MaxChannels:    a.MaxChannelsPerEvent,
				MaxBatch:       a.MaxBatchSize,
				MaxEventName:   a.MaxEventNameLength,
				MaxChannelName: a.MaxChannelNameLength,
			},
			SoketiErrors:        a.SubscriptionErrorMode == configs.SubscriptionErrorsSoketi,
			SubscriptionCount:   a.SubscriptionCount,
			MaxPresenceMembers:  a.MaxPresenceMembers,
			MaxPresenceUserInfo: a.MaxPresenceUserInfoBytes,
			ClientEventRate:     a.ClientEventRate,
			UserAuthentication:  a.UserAuthentication,
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

// Bus returns the node's bus.
func (n *Node) Bus() *bus.Bus { return n.bus }

// NATSURL is where NATS clients reach the node (nats://host:port), or ""
// without a client port.
func (n *Node) NATSURL() string { return n.bus.ClientURL() }

// Err receives the HTTP server's error if it stops serving on its own.
func (n *Node) Err() <-chan error { return n.serveErr }

// Stop drains and stops the node: readiness off, no new upgrades, the HTTP
// server stops, every socket is closed with 4200, then the bus stops.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() {
		n.http.SetReady(false)
		n.gw.Drain()
		if err := n.http.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
			n.stopErr = fmt.Errorf("node: stop http: %w", err)
		}
		if n.nats != nil {
			if err := n.nats.Stop(ctx); err != nil && n.stopErr == nil {
				n.stopErr = fmt.Errorf("node: stop nats api: %w", err)
			}
		}
		n.closeParts()
		n.log.Info("herald node stopped")
	})
	return n.stopErr
}

func (n *Node) closeParts() {
	if n.nats != nil { // before the bus: it publishes through the bus's connection
		if err := n.nats.Stop(context.Background()); err != nil {
			n.log.Warn("nats api stop", "err", err)
		}
	}
	if n.gw != nil {
		n.gw.Close()
	}
	n.sys.stop()
	n.stopCluster()
	if n.bus != nil {
		if err := n.bus.Close(); err != nil {
			n.log.Warn("bus close", "err", err)
		}
	}
	if n.ln != nil {
		_ = n.ln.Close()
	}
}

// localChannels answers channel queries from this node's own index: on a
// single node that is the whole truth.
type localChannels struct{ gw *gateway.Gateway }

func (l localChannels) SubscriptionCount(app *gateway.App, ch string) int {
	return l.gw.SubscriptionCount(app, ch)
}

func (l localChannels) UserCount(app *gateway.App, ch string) int { return l.gw.UserCount(app, ch) }

func (l localChannels) Occupied(app *gateway.App, fn func(string, int)) { l.gw.Channels(app, fn) }

func (l localChannels) Users(app *gateway.App, ch string) []string { return l.gw.Users(app, ch) }

func (l localChannels) TerminateUser(app *gateway.App, userID string) {
	l.gw.TerminateUser(app, userID)
}

// StopTimeout is how long Stop may take when a signal asks for it.
const StopTimeout = 10 * time.Second

// appWindows are the apps' own replay windows, where they set one.
func appWindows(apps []configs.App) map[string]bus.Window {
	out := map[string]bus.Window{}
	for _, a := range apps {
		if a.ReplayMaxAge != 0 || a.ReplayMaxMsgsPerChannel != 0 {
			out[a.ID] = bus.Window{MaxAge: a.ReplayMaxAge.D(), MaxMsgsPerChannel: a.ReplayMaxMsgsPerChannel}
		}
	}
	return out
}
