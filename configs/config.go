// Package configs owns Herald's Config struct, its defaults, loading (a YAML
// file, then HERALD_* environment overrides), validation, and the example
// files (herald.example.yaml).
//
// Precedence, lowest first: Default(), the YAML file, HERALD_* variables,
// then command-line flags, which the caller applies to the *Config after Load
// returns (and should follow with Validate).
//
// Herald runs with no file at all: Default() is one dev app (app-id, app-key,
// app-secret, client events on), a single node, data in ./data. Unknown keys
// in a file are warnings, never a refusal to start, unless LoadOptions.Strict
// is set (herald check-config --strict). Every value is validated at load
// with an error that names the key, and the file or variable it came from.
//
// A *Config is plain data: not safe for concurrent mutation, safe for
// concurrent reads once loaded.
package configs

import (
	"os"
	"time"

	"herald/app"
)

// Duration is the type of every duration key; YAML and HERALD_* variables
// read it from Go duration strings or whole seconds (app/duration.go).
type Duration = app.Duration

// ParseDuration parses a Go duration string or an integer number of seconds.
func ParseDuration(s string) (Duration, error) { return app.ParseDuration(s) }

// Defaults. Each is the value used when the key is absent; units are in the
// names (bytes, counts) or carried by the type (durations).
const (
	DefaultListen  = "127.0.0.1:6001"
	DefaultDataDir = "./data"

	DefaultLogLevel  = "info"
	DefaultLogFormat = "text"

	// The defaults of the per-app keys (apps[]) are app.New's.

	DefaultActivityTimeout = 120 * time.Second
	DefaultPongTimeout     = 30 * time.Second
	DefaultMaxMessageBytes = 32768
	DefaultWriteQueueBytes = 1 << 20
	// DefaultHandshakeTimeout bounds how long a new TCP connection may take
	// to send its request header (slowloris, sockets that never speak).
	DefaultHandshakeTimeout = 5 * time.Second

	DefaultStreamMaxAge            = 2 * time.Minute
	DefaultCacheTTL                = 30 * time.Minute
	DefaultStreamMaxMsgsPerChannel = 1000
	DefaultStreamSync              = SyncInterval

	// DefaultBusClientListen is where backends connect to publish over NATS
	// (NATS's own default port, loopback only).
	DefaultBusClientListen = "127.0.0.1:4222"

	DefaultHTTPMaxBodyBytes    = 1 << 20
	DefaultHTTPReadBufferBytes = 16384

	// Values of apps_source.
	AppsFromConfig   = "config"   // the apps of the file (or HERALD_APPS); changed by a reload
	AppsFromRegistry = "registry" // the HERALD_APPS key-value bucket every node watches (docs/apps.md)

	// The built-in dev app, used when neither the file nor HERALD_APPS lists apps.
	DevAppID     = "app-id"
	DevAppKey    = "app-key"
	DevAppSecret = "app-secret"

	// DefaultClusterBind is the memberlist address (TCP and UDP), and
	// DefaultClusterRouteListen the NATS route listener, of a clustered node
	// (loopback only, like the other defaults).
	DefaultClusterBind        = "127.0.0.1:7946"
	DefaultClusterRouteListen = "127.0.0.1:6222"
	DefaultClusterPreset      = PresetLAN
	// DefaultClusterGatewayListen is the NATS gateway listener of a node
	// of a region (cluster.region set; docs/regions.md).
	DefaultClusterGatewayListen = "127.0.0.1:7222"

	// DefaultAdminListen is the admin API's listener (docs/operations.md):
	// loopback only, so it needs no token.
	DefaultAdminListen = "127.0.0.1:6060"

	DefaultDrainWindow   = 10 * time.Second
	DefaultDrainDeadline = 30 * time.Second

	// Webhook delivery (docs/webhooks.md).
	DefaultWebhookGrace            = 3 * time.Second
	DefaultWebhookRetryFor         = 24 * time.Hour
	DefaultWebhookTimeout          = 5 * time.Second
	DefaultWebhookBatchSize        = 50
	DefaultWebhookWorkers          = 8
	DefaultWebhookDeadLetterMaxAge = 7 * 24 * time.Hour

	// MinClusterRoutes is the fewest cluster.routes a clustered node accepts:
	// JetStream clustering elects its meta leader only with 3 or more
	// configured nodes.
	MinClusterRoutes = 3
)

// Values of Cluster.Preset: memberlist's timing.
const (
	// PresetLAN is memberlist's LAN timing, tuned so that a crashed node is
	// declared dead within 4.2 seconds (cluster.FailureDetection).
	PresetLAN = "lan"
	// PresetLocal is memberlist's loopback timing: faster probes and gossip,
	// for tests and clusters on one machine.
	PresetLocal = "local"
	// PresetWAN is for one memberlist cluster across regions
	// (docs/regions.md): slower probes that tolerate round trips up to
	// about a second; a crashed node is declared dead within 10.5 seconds.
	PresetWAN = "wan"
)

// Values of Bus.Mode: where NATS runs.
const (
	// BusEmbedded runs an embedded NATS server (standalone, or clustered
	// with the cluster block).
	BusEmbedded = "embedded"
	// BusExternal runs no NATS server: the node connects to an existing
	// deployment at bus.urls and keeps its streams there.
	BusExternal = "external"
	// BusLeaf runs the embedded server as a leaf node of an existing
	// deployment (bus.leaf_remotes), with its own JetStream domain.
	BusLeaf = "leaf"

	// DefaultBusReplicas is bus.replicas: streams on an external deployment
	// have one replica unless configured.
	DefaultBusReplicas = 1
)

// Values of Stream.Sync.
const (
	// SyncInterval lets JetStream flush to disk every 2 minutes: a crash of
	// the process loses nothing acknowledged, a crash of the OS can.
	SyncInterval = "interval"
	// SyncAlways fsyncs every write.
	SyncAlways = "always"
)

// Config is the whole configuration of one Herald node.
type Config struct {
	Listen  string    `yaml:"listen"`   // host:port for WebSocket + REST; default "127.0.0.1:6001"
	DataDir string    `yaml:"data_dir"` // JetStream and other state; default "./data"
	Log     Log       `yaml:"log"`
	Apps    []app.App `yaml:"apps"` // default: the dev app; a file's list replaces it (keys: herald/app.App)
	Gateway Gateway   `yaml:"gateway"`
	Bus     Bus       `yaml:"bus"`
	HTTP    HTTP      `yaml:"http"`
	Cluster Cluster   `yaml:"cluster"`
	TLS     TLS       `yaml:"tls"` // wss:// and https:// on listen (tls.go); default off

	// AppsSource is where the node's apps come from: AppsFromConfig (apps
	// above) or AppsFromRegistry (the replicated HERALD_APPS bucket,
	// managed with herald apps; docs/apps.md).
	AppsSource string `yaml:"apps_source"` // default "config"

	Admin    Admin    `yaml:"admin"`
	Shutdown Shutdown `yaml:"shutdown"`
	Webhooks Webhooks `yaml:"webhooks"`
}

// Admin configures the admin API (drain, reload, status, webhooks), served
// on its own listener, apart from the client port.
type Admin struct {
	Listen string `yaml:"listen"` // default "127.0.0.1:6060"; "" = off; port 0 = random
	Token  string `yaml:"token"`  // default "" = none; a bearer token, required when listen is not a loopback address
}

// Shutdown configures how a node stops (SIGTERM, herald drain).
type Shutdown struct {
	DrainWindow Duration `yaml:"drain_window"` // default 10s: sockets are told to reconnect (4200) spread over this window; 0..10m
	Deadline    Duration `yaml:"deadline"`     // default 30s: the hard stop after the drain began; 1s..1h, at least drain_window
}

// Webhooks configures webhook delivery for every app (the targets are
// apps[].webhooks).
type Webhooks struct {
	Grace            Duration `yaml:"grace"`               // default 3s: channel_vacated and member_removed wait this long, cancelled by a re-join; 0..1m
	RetryFor         Duration `yaml:"retry_for"`           // default 24h: how long a failing event is retried before it is dead-lettered; 1s..720h
	Timeout          Duration `yaml:"timeout"`             // default 5s: per request; 100ms..2m
	BatchSize        int      `yaml:"batch_size"`          // default 50: most events in one request; 1..1000
	Workers          int      `yaml:"workers"`             // default 8: concurrent requests per node; 1..1024
	DeadLetterMaxAge Duration `yaml:"dead_letter_max_age"` // default 168h: how long dead-lettered events are kept for herald webhooks replay; 1m..8760h
}

// Log configures the process logger.
type Log struct {
	Level  string `yaml:"level"`  // debug|info|warn|error; default info
	Format string `yaml:"format"` // text|json; default text
}

// Gateway configures the WebSocket edge.
type Gateway struct {
	ActivityTimeout Duration `yaml:"activity_timeout"`  // default 120s; sent to clients as whole seconds; 1s..1h
	PongTimeout     Duration `yaml:"pong_timeout"`      // default 30s; 100ms..10m
	MaxMessageBytes int      `yaml:"max_message_bytes"` // default 32768: largest message (and frame) from a client; 1024..16777216
	WriteQueueBytes int      `yaml:"write_queue_bytes"` // default 1048576: per-socket outbound bound before a slow-consumer close; 4096..1073741824
	Pollers         int      `yaml:"pollers"`           // default 0 = GOMAXPROCS; 0..256
	RequireProtocol bool     `yaml:"require_protocol"`  // default false: a missing ?protocol= means 7; true closes with 4008
	AcceptRate      int      `yaml:"accept_rate"`       // default 0 = unlimited: new sockets per second; over it a socket is closed with 4100; 0..1000000

	// Per source address (docs/limits.md). The address is the TCP peer's,
	// or the last X-Forwarded-For entry not in TrustedProxies when the peer
	// is one of them.
	HandshakeTimeout    Duration `yaml:"handshake_timeout"`      // default 5s: a TCP connection must send a complete request header within it, or it is closed; 100ms..5m
	MaxConnectionsPerIP int      `yaml:"max_connections_per_ip"` // default 0 = off: open WebSockets per source address; over it a socket is closed with 4100; 0..10000000
	AcceptRatePerIP     int      `yaml:"accept_rate_per_ip"`     // default 0 = off: new WebSockets per second per source address; over it a socket is closed with 4100; 0..1000000
	TrustedProxies      []string `yaml:"trusted_proxies"`        // default []: CIDRs or addresses of load balancers whose X-Forwarded-For is believed
}

// ActivityTimeoutSeconds is ActivityTimeout as the whole number of seconds
// sent to clients in pusher:connection_established (rounded down, at least 1).
func (g *Gateway) ActivityTimeoutSeconds() int {
	s := int(g.ActivityTimeout.D() / time.Second)
	if s < 1 {
		return 1
	}
	return s
}

// Bus configures message delivery between nodes.
type Bus struct {
	Stream   Stream   `yaml:"stream"`
	Shards   int      `yaml:"shards"`    // default 0 = GOMAXPROCS; live-delivery shards; 0..256
	CacheTTL Duration `yaml:"cache_ttl"` // default 30m: how long cache channels keep their last event; 1s..24h

	// The NATS client port (docs/nats.md).
	ClientListen      string `yaml:"client_listen"`       // default "127.0.0.1:4222": NATS client port for backends; "" = off; port 0 = random. Unused in external mode
	ClientSharedInbox bool   `yaml:"client_shared_inbox"` // default false: app users get replies only under _INBOX.<app-id>; true also allows _INBOX.> (single tenant only)

	// Where NATS runs (docs/nats.md "External NATS" and "Leaf node"). The
	// lists (URLs, LeafRemotes) have no HERALD_* variable: only a file sets
	// them.
	Mode            string   `yaml:"mode"`             // BusEmbedded (default), BusExternal or BusLeaf
	URLs            []string `yaml:"urls"`             // external: URLs of the existing NATS servers (nats://, tls://, ws://, wss://); default []
	Credentials     string   `yaml:"credentials"`      // external: the node's .creds file; leaf: the leaf connection's; default "" = none
	User            string   `yaml:"user"`             // external: the node's NATS user; leaf: the leaf connection's; default "" = none. Not with credentials
	Password        string   `yaml:"password"`         // the password of user; default ""
	Replicas        int      `yaml:"replicas"`         // external: replicas of every stream, 1..5; default 1
	LeafRemotes     []string `yaml:"leaf_remotes"`     // leaf: URLs of the hub's leaf node port (nats-leaf://hub:7422); default []
	JetStreamDomain string   `yaml:"jetstream_domain"` // leaf: the leaf's own JetStream domain (required); external: the domain to use; default ""
}

// Stream configures the JetStream replay window of every app.
type Stream struct {
	Enabled           *bool    `yaml:"enabled"`              // default true; false = core NATS only, no serials, no replay. Use IsEnabled.
	MaxAge            Duration `yaml:"max_age"`              // default 2m: replay window age; 1s..720h
	MaxMsgsPerChannel int64    `yaml:"max_msgs_per_channel"` // default 1000; 1..10000000
	Sync              string   `yaml:"sync"`                 // "interval" (default) or "always"; see SyncInterval, SyncAlways
}

// IsEnabled reports whether JetStream replay and serials are on (Enabled nil
// means true).
func (s *Stream) IsEnabled() bool { return s.Enabled == nil || *s.Enabled }

// HTTP configures the HTTP server shared by REST and WebSocket upgrades.
type HTTP struct {
	MaxBodyBytes    int `yaml:"max_body_bytes"`    // default 1048576; 1024..67108864
	ReadBufferBytes int `yaml:"read_buffer_bytes"` // default 16384 (upgrade requests with big cookies); 4096..1048576
}

// Cluster makes the node one of several (configs/cluster/ has a 3-node
// example). With Name "" (the default) the node runs alone: no memberlist
// agent, JetStream standalone, and the other keys are ignored.
//
// memberlist (membership, presence gossip) and NATS (message routes,
// JetStream) listen on different addresses: Bind/Advertise/Seeds are
// memberlist's, RouteListen/RouteAdvertise/Routes are NATS's.
//
// The lists (Seeds, Routes) have no HERALD_* variable: only a file sets them.
type Cluster struct {
	Name           string   `yaml:"name"`            // "" (default) = single node; else ^[A-Za-z0-9_.-]{1,64}$, the same on every node
	NodeName       string   `yaml:"node_name"`       // default "" = the hostname; unique and stable per node, ^[A-Za-z0-9_.-]{1,64}$. Use LocalName.
	Bind           string   `yaml:"bind"`            // memberlist host:port, TCP and UDP; default "127.0.0.1:7946"
	Advertise      string   `yaml:"advertise"`       // memberlist host:port other nodes use; default "" = Bind. Use AdvertiseAddr.
	Seeds          []string `yaml:"seeds"`           // memberlist host:port of nodes to join through; this node's own address may be listed (ignored)
	Routes         []string `yaml:"routes"`          // NATS route host:port of every node, this one included; at least MinClusterRoutes
	RouteListen    string   `yaml:"route_listen"`    // this node's NATS route listener; default "127.0.0.1:6222"; its port must be one of Routes'
	RouteAdvertise string   `yaml:"route_advertise"` // NATS route host:port other nodes use; default "" = NATS's choice (RouteListen's address)
	Preset         string   `yaml:"preset"`          // memberlist timing: PresetLAN (default), PresetLocal or PresetWAN
	// A closed cluster (closed.go, docs/deploy.md): a shared gossip key and
	// a shared route password. Never logged, reported or diffed by value.
	SecretKey          string   `yaml:"secret_key"`           // base64 AES key, 16/24/32 bytes: memberlist gossip encrypted and authenticated; "" = in clear
	PreviousSecretKeys []string `yaml:"previous_secret_keys"` // older keys still accepted (rotation); needs secret_key
	RouteAuth          string   `yaml:"route_auth"`           // password every NATS route presents and requires; "" = open routes
	PreviousRouteAuth  []string `yaml:"previous_route_auth"`  // older route passwords still accepted (rotation); needs route_auth
	RouteTLS           RouteTLS `yaml:"route_tls"`            // mutual TLS on NATS routes; off by default

	// Regions (docs/regions.md): this cluster is one region of several,
	// joined to the others by NATS gateways. Region "" (default) is one
	// cluster and the three keys after it are ignored.
	Region           string          `yaml:"region"`            // this cluster's region, ^[A-Za-z0-9_.-]{1,64}$, the same on every node of the region
	GatewayListen    string          `yaml:"gateway_listen"`    // this node's NATS gateway listener; default "127.0.0.1:7222"
	GatewayAdvertise string          `yaml:"gateway_advertise"` // NATS gateway host:port the other regions use; default "" = gateway_listen's address
	Gateways         []RegionGateway `yaml:"gateways"`          // the other regions: at least one with region set
	HomeRegion       string          `yaml:"home_region"`       // the region holding every stream; "" = the first region name, sorted; the same on every node of every region
}

// RegionGateway is another region: its name and the NATS gateway addresses
// (host:port) of its nodes, every node's (JetStream counts them to size
// its one meta group across the regions: docs/regions.md).
type RegionGateway struct {
	Name string   `yaml:"name"`
	URLs []string `yaml:"urls"`
}

// Enabled reports whether the node is clustered (Name is set).
func (c *Cluster) Enabled() bool { return c.Name != "" }

// LocalName is this node's name: NodeName, or the hostname when NodeName is
// "" ("" if the hostname is unavailable; Validate rejects that when the
// cluster is enabled).
func (c *Cluster) LocalName() string {
	if c.NodeName != "" {
		return c.NodeName
	}
	h, err := hostname()
	if err != nil {
		return ""
	}
	return h
}

// AdvertiseAddr is the memberlist address other nodes use: Advertise, or
// Bind when Advertise is "". It may name a host rather than an IP
// (docker-compose: "node1:7946"); memberlist needs it resolved to an IP.
func (c *Cluster) AdvertiseAddr() string {
	if c.Advertise != "" {
		return c.Advertise
	}
	return c.Bind
}

// hostname is os.Hostname, replaceable in tests.
var hostname = os.Hostname

// Default returns the configuration used with no file: every default and the
// dev app {ID: "app-id", Key: "app-key", Secret: "app-secret", ClientEvents: true}.
// Pointer fields (Enabled) are set to fresh pointers to true, so the result
// compares equal (reflect.DeepEqual) to a loaded file that spells out the
// defaults. Each call returns a new Config.
func Default() *Config {
	dev := app.New(DevAppID, DevAppKey, DevAppSecret)
	dev.ClientEvents = true
	return &Config{
		Listen:  DefaultListen,
		DataDir: DefaultDataDir,
		Log:     Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
		Apps:    []app.App{dev},

		AppsSource: AppsFromConfig,

		Gateway: Gateway{
			ActivityTimeout: Duration(DefaultActivityTimeout),
			PongTimeout:     Duration(DefaultPongTimeout),
			MaxMessageBytes: DefaultMaxMessageBytes,
			WriteQueueBytes: DefaultWriteQueueBytes,

			HandshakeTimeout: Duration(DefaultHandshakeTimeout),
			TrustedProxies:   []string{},
		},
		Bus: Bus{
			CacheTTL:     Duration(DefaultCacheTTL),
			ClientListen: DefaultBusClientListen,
			Mode:         BusEmbedded,
			URLs:         []string{}, // empty, not nil, as Cluster.Seeds
			Replicas:     DefaultBusReplicas,
			LeafRemotes:  []string{},
			Stream: Stream{
				Enabled:           boolPtr(true),
				MaxAge:            Duration(DefaultStreamMaxAge),
				MaxMsgsPerChannel: DefaultStreamMaxMsgsPerChannel,
				Sync:              DefaultStreamSync,
			},
		},
		HTTP: HTTP{
			MaxBodyBytes:    DefaultHTTPMaxBodyBytes,
			ReadBufferBytes: DefaultHTTPReadBufferBytes,
		},
		Cluster: Cluster{
			Bind: DefaultClusterBind,
			// Empty, not nil: a file's "seeds: []" decodes to an empty
			// list, and the example must equal Default().
			Seeds:              []string{},
			Routes:             []string{},
			RouteListen:        DefaultClusterRouteListen,
			Preset:             DefaultClusterPreset,
			PreviousSecretKeys: []string{},
			PreviousRouteAuth:  []string{},
			// Empty, not nil, as Seeds.
			GatewayListen: DefaultClusterGatewayListen,
			Gateways:      []RegionGateway{},
		},
		Admin:    Admin{Listen: DefaultAdminListen},
		Shutdown: Shutdown{DrainWindow: Duration(DefaultDrainWindow), Deadline: Duration(DefaultDrainDeadline)},
		Webhooks: Webhooks{
			Grace:            Duration(DefaultWebhookGrace),
			RetryFor:         Duration(DefaultWebhookRetryFor),
			Timeout:          Duration(DefaultWebhookTimeout),
			BatchSize:        DefaultWebhookBatchSize,
			Workers:          DefaultWebhookWorkers,
			DeadLetterMaxAge: Duration(DefaultWebhookDeadLetterMaxAge),
		},
	}
}

// Loopback is the preset for tests: Default() listening on 127.0.0.1:0 (a
// free port), its NATS client port on another free port, with its data in
// dataDir (typically t.TempDir()).
func Loopback(dataDir string) *Config {
	c := Default()
	c.Listen = "127.0.0.1:0"
	c.Bus.ClientListen = "127.0.0.1:0"
	c.Admin.Listen = "127.0.0.1:0"
	c.DataDir = dataDir
	return c
}

func boolPtr(b bool) *bool { return &b }
