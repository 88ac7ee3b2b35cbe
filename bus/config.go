package bus

import (
	"log/slog"
	"path/filepath"
	"runtime"
	"time"
)

// Defaults applied by Start to zero Config fields.
const (
	DefaultServerName       = "herald"
	DefaultUnsubscribeGrace = 5 * time.Second

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
	DataDir           string        // node data dir; the server stores under DataDir/nats
	ServerName        string        // default "herald"
	StreamEnabled     bool          // false: no streams, publishes go straight to the live subject (Serial 0)
	MaxAge            time.Duration // replay window, e.g. 2*time.Minute; 0 = unlimited
	MaxMsgsPerChannel int64         // per-channel depth, e.g. 1000; 0 = unlimited
	SyncAlways        bool          // fsync every stored message (server SyncAlways); default: sync every 2 min
	Shards            int           // delivery shards; 0 = runtime.GOMAXPROCS(0)
	UnsubscribeGrace  time.Duration // keep an unused live subscription this long; 0 = 5s
	Apps              []string      // app ids whose streams are ensured at Start
	Logger            *slog.Logger  // nil = slog.Default()
}

// DefaultConfig is a single-node config storing under dataDir with a
// two-minute, 1000-message-per-channel replay window.
func DefaultConfig(dataDir string) Config {
	return Config{
		DataDir:           dataDir,
		ServerName:        DefaultServerName,
		StreamEnabled:     true,
		MaxAge:            2 * time.Minute,
		MaxMsgsPerChannel: 1000,
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

// storeDir is where the embedded server keeps JetStream data.
func (cfg Config) storeDir() string { return filepath.Join(cfg.DataDir, "nats") }
