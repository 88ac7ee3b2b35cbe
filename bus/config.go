package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"time"

	"herald/app"
)

// Defaults applied by Start to zero Config fields.
const (
	DefaultServerName       = "herald"
	DefaultUnsubscribeGrace = 5 * time.Second
	DefaultCacheTTL         = 30 * time.Minute // Config.CacheTTL; Pusher keeps cached events at most 30 minutes
	// DefaultMaxAge and DefaultMaxMsgsPerChannel are the replay window of
	// DefaultConfig, and of bus.stream in the config file.
	DefaultMaxAge            = 2 * time.Minute
	DefaultMaxMsgsPerChannel = 1000

	// ShardQueueLen is the capacity of each shard's channel. A message that
	// finds its shard full is dropped by nats.go and counted as a
	// slow-consumer drop (Stats.SlowConsumerDrops).
	ShardQueueLen = 65536
	// MaxDrain is the most messages a shard hands to the Sink between two
	// Sink.Flush calls.
	MaxDrain = 1024

	readyTimeout      = 10 * time.Second
	ensureAttemptWait = 2 * time.Second // per CreateOrUpdateStream attempt
	ensureAttempts    = 5
	asyncMaxPending   = 16384
	asyncAckTimeout   = 10 * time.Second // an async publish not acked by then fails
	batchStallWait    = 2 * time.Second
)

// Config configures one node's bus. The zero value of each field has the
// default documented on it; DefaultConfig gives a ready single-node setup.
type Config struct {
	DataDir           string        // node data dir; the server stores under DataDir/nats (unused in external mode)
	ServerName        string        // default "herald"
	StreamEnabled     bool          // false: no streams, publishes go straight to the live subject (Serial 0)
	MaxAge            time.Duration // replay window, e.g. 2*time.Minute; 0 = unlimited
	MaxMsgsPerChannel int64         // per-channel depth, e.g. 1000; 0 = unlimited
	// AppRegistry is the node's app model (herald/app). When set, each
	// app's own replay window (replay_max_age, replay_max_msgs_per_channel)
	// overrides MaxAge and MaxMsgsPerChannel for its stream, and Apps and
	// ClientUsers, when empty, are taken from its apps (and follow a
	// Replace of the registry: clientauth.go).
	AppRegistry      *app.Registry
	CacheTTL         time.Duration // how long a cache channel's last event is kept (cache.go); 0 = 30 minutes
	SyncAlways       bool          // fsync every stored message (server SyncAlways); default: sync every 2 min
	Shards           int           // delivery shards; 0 = runtime.GOMAXPROCS(0)
	UnsubscribeGrace time.Duration // keep an unused live subscription this long; 0 = 5s
	Apps             []string      // app ids whose streams are ensured at Start
	Logger           *slog.Logger  // nil = slog.Default()
	// DeliveryLatency, when set, is given one sample per delivery batch:
	// seconds from the batch's first event being stored to the Sink's
	// Flush having written it (health.go), or, for an ObservingSink, to the
	// Sink's own writers having written it. Streams on only.
	DeliveryLatency Observer

	// NATS client port (clientport.go). With ClientListen "" the server
	// takes no network clients and the fields below are unused.
	ClientListen      string       // host:port NATS clients connect to; "" = none (in-process only); port 0 = a random port
	ClientUsers       []ClientUser // credentials for ClientListen, each fenced to its app's subjects
	ClientSharedInbox bool         // obsolete and unused: app users have accounts of their own (accounts.go); kept so old callers compile

	// Clustering (cluster.go). The zero value runs the node standalone.
	Cluster      ClusterConfig
	ReadyTimeout time.Duration // cluster and external mode: how long Start waits for JetStream (a meta leader) and the apps' streams; 0 = 30s

	// Where NATS runs (external.go, leaf.go). The zero Mode embeds a server.
	// External mode has no embedded server, so the client port, ClientUsers,
	// SyncAlways and Cluster do not apply there (Start refuses them).
	Mode            string   // ModeEmbedded (or ""), ModeExternal, ModeLeaf
	URLs            []string // external: URLs of the NATS servers to connect to (nats://, tls://, ws://, wss://); at least one
	Credentials     string   // external: the node's .creds file; leaf: the leaf connections' .creds file; "" = none
	User            string   // external: the node's user name; leaf: the leaf connections' (unless a remote URL carries its own); "" = none
	Password        string   // the password of User
	Replicas        int      // external: replicas of every stream, 1..5; 0 = 1
	LeafRemotes     []string // leaf: URLs of the hub's leaf node port (nats-leaf://hub:7422, tls://, ws://, wss://); at least one
	JetStreamDomain string   // leaf: the embedded JetStream's domain (required); external: the domain of the JetStream to use; "" = none

	// The disk watcher (disk.go; embedded and leaf mode, streams on).
	DiskCheckInterval time.Duration // how often the store's filesystem and JetStream are looked at; 0 = 1s
	DiskReserve       int64         // free bytes below which the store counts as full; 0 = 1 % of the filesystem, within [1 MiB, 256 MiB]

	internalPassword string       // the node's own connection's password when ClientListen is set or clustered; generated by Start
	usersFromApps    bool         // ClientUsers came from AppRegistry: logins read the registry live (clientauth.go)
	auth             *clientAuth  // the server's authentication; built by Start
	routeAuth        *routeAuth   // the routes' authentication (routeauth.go); built by Start
	serverError      func(string) // sees the embedded server's errors and warnings (disk.go); set by Start
}

// Values of Config.Mode.
const (
	ModeEmbedded = "embedded" // an embedded nats-server (standalone or clustered); the default
	ModeExternal = "external" // no embedded server: connect to an existing NATS deployment (external.go)
	ModeLeaf     = "leaf"     // an embedded server that is a leaf node of an existing deployment (leaf.go)
)

// DefaultConfig is a single-node config storing under dataDir with a
// two-minute, 1000-message-per-channel replay window.
func DefaultConfig(dataDir string) Config {
	return Config{
		DataDir:           dataDir,
		ServerName:        DefaultServerName,
		StreamEnabled:     true,
		MaxAge:            DefaultMaxAge,
		MaxMsgsPerChannel: DefaultMaxMsgsPerChannel,
	}
}

// withDefaults returns cfg with zero fields replaced by their defaults.
func (cfg Config) withDefaults() Config {
	if cfg.ServerName == "" {
		cfg.ServerName = DefaultServerName
	}
	if cfg.Shards <= 0 {
		cfg.Shards = runtime.GOMAXPROCS(0)
	}
	if cfg.UnsubscribeGrace <= 0 {
		cfg.UnsubscribeGrace = DefaultUnsubscribeGrace
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Cluster.Enabled() && cfg.Cluster.Name == "" {
		cfg.Cluster.Name = DefaultClusterName
	}
	if cfg.Cluster.regional() {
		cfg.Cluster.Name = cfg.Cluster.Region // a gateway's name is its cluster's (region.go)
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeEmbedded
	}
	if cfg.DiskCheckInterval <= 0 {
		cfg.DiskCheckInterval = DefaultDiskCheckInterval
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.AppRegistry != nil {
		apps := cfg.AppRegistry.Table()
		if len(cfg.Apps) == 0 {
			cfg.Apps = apps.IDs()
		}
		if cfg.ClientUsers == nil && cfg.ClientListen != "" && cfg.Mode != ModeExternal {
			// Checked at Start like given users; logins then read the
			// registry as it is at each login, so a reload applies.
			cfg.ClientUsers = ClientUsersOf(apps.All())
			cfg.usersFromApps = true
		}
	}
	return cfg
}

// checkMode validates the fields of cfg.Mode (external.go, leaf.go) and
// refuses fields a mode cannot use.
func checkMode(cfg Config) error {
	switch cfg.Mode {
	case ModeEmbedded:
		if len(cfg.URLs) > 0 || len(cfg.LeafRemotes) > 0 || cfg.Credentials != "" || cfg.User != "" || cfg.Password != "" ||
			cfg.JetStreamDomain != "" || cfg.Replicas > 1 {
			return fmt.Errorf("%w: URLs, LeafRemotes, Credentials, User, Password, JetStreamDomain and Replicas are for external or leaf mode", ErrModeConfig)
		}
		return nil
	case ModeExternal:
		return checkExternal(cfg)
	case ModeLeaf:
		return checkLeaf(cfg)
	}
	return fmt.Errorf("%w: unknown mode %q (%s, %s or %s)", ErrModeConfig, cfg.Mode, ModeEmbedded, ModeExternal, ModeLeaf)
}

// ErrModeConfig: the fields of Config.Mode are not usable.
var ErrModeConfig = errors.New("bus: invalid mode config")

// needsAuth reports whether the server has a client listener and so
// requires a user, the node's own included: with a client port, and always
// in cluster mode (cluster.go).
func (cfg Config) needsAuth() bool { return cfg.ClientListen != "" || cfg.Cluster.Enabled() }

// storeDir is where the embedded server keeps JetStream data.
func (cfg Config) storeDir() string { return filepath.Join(cfg.DataDir, "nats") }

// window is app's replay window: its own (AppRegistry), else the defaults.
func (cfg Config) window(id string) app.Window {
	def := app.Window{MaxAge: cfg.MaxAge, MaxMsgsPerChannel: cfg.MaxMsgsPerChannel}
	if cfg.AppRegistry != nil {
		if a, ok := cfg.AppRegistry.ByID(id); ok {
			return a.ReplayWindow(def)
		}
	}
	return def
}
