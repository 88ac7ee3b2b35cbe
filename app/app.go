// Package app owns Herald's app model: the App type (one Pusher
// application: credentials, flags and per-app limits), the defaults of every
// per-app key, written here once, their validation, and the Registry every
// other part reads apps through.
//
// One type serves everyone: configs parses YAML and HERALD_* variables
// straight into App (the yaml tags are the config keys, documented in
// configs/herald.example.yaml), and the gateway, the REST and NATS APIs and
// the bus read the same values through a Registry. Adding a per-app key is a
// field here, its default in New, its check in Validate, and its use where
// it is enforced; app_test.go's key table fails until the key is listed with
// the test that proves it reaches its enforcer.
//
// A Registry is an atomically swappable Table: readers never lock, and a
// reload builds a new Table and swaps it in whole.
package app

import (
	"time"

	"herald/protocol"
)

// Defaults of the per-app keys that protocol does not already define (its
// DefaultLimits are Pusher's REST limits, used as they are).
const (
	DefaultMaxPresenceMembers       = 100  // distinct users per presence channel (Pusher's limit)
	DefaultMaxPresenceUserInfoBytes = 1024 // bytes of a member's user_info JSON
	DefaultClientEventRate          = 10   // client events per second per connection (Pusher's limit)

	// Limits on what one client or one backend may ask of a node
	// (docs/limits.md).
	DefaultMaxChannelsPerConnection  = 1000 // channels one socket may hold
	DefaultSubscribeRate             = 50   // subscribe and unsubscribe messages per second per socket
	DefaultMaxConcurrentRESTRequests = 64   // REST requests of one app in progress on one node

	// UserAuthenticationTimeout is how long a connection of an app with
	// user_authentication may stay unsigned-in before it is closed with 4009.
	UserAuthenticationTimeout = 30 * time.Second
)

// Values of App.SubscriptionErrorMode.
const (
	// SubscriptionErrorsPusher answers a refused subscription with
	// pusher:error, as Pusher does.
	SubscriptionErrorsPusher = "pusher"
	// SubscriptionErrorsSoketi answers with a channel-scoped
	// pusher:subscription_error, which Laravel Echo's .error() receives.
	SubscriptionErrorsSoketi = "soketi"
)

// App is one Pusher application: its credentials and per-app limits. The
// yaml tags are the keys of apps[] in the config file. Build one with New,
// which sets every default; a zero App has zero limits, which Validate
// refuses.
//
// An App in a Table is shared by every reader: never modify it there.
type App struct {
	ID      string `yaml:"id"`      // required, ^[A-Za-z0-9_-]{1,64}$, unique
	Key     string `yaml:"key"`     // required, ^[A-Za-z0-9_\-.]{1,128}$, unique across apps
	Secret  string `yaml:"secret"`  // required, non-empty
	Enabled *bool  `yaml:"enabled"` // default true (nil means true); use IsEnabled

	ClientEvents bool `yaml:"client_events"` // default false for configured apps; the dev app has true

	MaxConnections       int `yaml:"max_connections"`         // 0 = unlimited; >= 0
	MaxEventDataBytes    int `yaml:"max_event_data_bytes"`    // default 10240; 1..1048576
	MaxChannelsPerEvent  int `yaml:"max_channels_per_event"`  // default 100; 1..1000
	MaxBatchSize         int `yaml:"max_batch_size"`          // default 10; 1..1000
	MaxEventNameLength   int `yaml:"max_event_name_length"`   // default 200; 1..1000
	MaxChannelNameLength int `yaml:"max_channel_name_length"` // default 200; 1..1000

	SubscriptionErrorMode    string `yaml:"subscription_error_mode"`      // "pusher" (default): pusher:error; "soketi": channel-scoped pusher:subscription_error
	SubscriptionCount        bool   `yaml:"subscription_count"`           // default false: send pusher_internal:subscription_count to subscribers
	MaxPresenceMembers       int    `yaml:"max_presence_members"`         // default 100 distinct users per presence channel; 1..100000
	MaxPresenceUserInfoBytes int    `yaml:"max_presence_user_info_bytes"` // default 1024; 1..65536
	ClientEventRate          int    `yaml:"client_event_rate"`            // default 10 client events per second per connection; 1..10000
	UserAuthentication       bool   `yaml:"user_authentication"`          // default false; true: connections must pusher:signin within 30 s or are closed with 4009

	MaxChannelsPerConnection  int `yaml:"max_channels_per_connection"`  // default 1000 channels one socket may hold; 1..100000
	SubscribeRate             int `yaml:"subscribe_rate"`               // default 50 subscribe and unsubscribe messages per second per socket; 1..100000
	MaxConcurrentRESTRequests int `yaml:"max_concurrent_rest_requests"` // default 64 REST requests in progress per node; 1..100000

	ReplayMaxAge            Duration `yaml:"replay_max_age"`              // default 0 = bus.stream.max_age: how long this app's events stay replayable; 0 or 1s..720h
	ReplayMaxMsgsPerChannel int64    `yaml:"replay_max_msgs_per_channel"` // default 0 = bus.stream.max_msgs_per_channel; 0..10000000

	NATS NATS `yaml:"nats"` // NATS client credentials (bus.client_listen); default user = id, password = secret

	// PreviousSecrets are still accepted for REST signatures, channel and
	// user auth and NATS while a secret rotates; remove them to end the
	// overlap. Use Secrets.
	PreviousSecrets []string `yaml:"previous_secrets"` // default []

	Webhooks []Webhook `yaml:"webhooks"` // default []: where this app's webhooks go (webhook.go)

	// AllowedOrigins are the browser origins whose pages may open a
	// WebSocket to the app ("https://example.com", "https://*.example.com";
	// origin.go); an upgrade with another Origin header is closed with
	// 4009. Empty allows every origin; no Origin header is always allowed.
	AllowedOrigins []string `yaml:"allowed_origins"` // default []: every origin
}

// NATS is an app's credentials on the NATS client port. Empty fields take
// the defaults; use App.NATSUser and App.NATSPassword.
type NATS struct {
	User     string `yaml:"user"`     // default "" = the app id; ^[A-Za-z0-9_\-.]{1,128}$, unique across apps
	Password string `yaml:"password"` // default "" = the app secret; a bcrypt hash ("$2a$...") is accepted
	Nkey     string `yaml:"nkey"`     // default "" = none; a public user nkey ("U...") that may connect too, unique across apps
}

// New returns an enabled app with the given credentials and every per-app
// key at its default (client events off). Apps read from a file or from
// HERALD_APPS start from this before their keys are applied.
func New(id, key, secret string) App {
	lim := protocol.DefaultLimits()
	on := true
	return App{
		ID:                   id,
		Key:                  key,
		Secret:               secret,
		Enabled:              &on,
		MaxEventDataBytes:    lim.MaxDataBytes,
		MaxChannelsPerEvent:  lim.MaxChannels,
		MaxBatchSize:         lim.MaxBatch,
		MaxEventNameLength:   lim.MaxEventName,
		MaxChannelNameLength: lim.MaxChannelName,

		SubscriptionErrorMode:    SubscriptionErrorsPusher,
		MaxPresenceMembers:       DefaultMaxPresenceMembers,
		MaxPresenceUserInfoBytes: DefaultMaxPresenceUserInfoBytes,
		ClientEventRate:          DefaultClientEventRate,

		MaxChannelsPerConnection:  DefaultMaxChannelsPerConnection,
		SubscribeRate:             DefaultSubscribeRate,
		MaxConcurrentRESTRequests: DefaultMaxConcurrentRESTRequests,

		PreviousSecrets: []string{}, // empty, not nil: a file's "[]" decodes to an empty list
		Webhooks:        []Webhook{},
		AllowedOrigins:  []string{},
	}
}

// IsEnabled reports whether the app accepts connections and events
// (Enabled nil means true).
func (a *App) IsEnabled() bool { return a.Enabled == nil || *a.Enabled }

// Limits are the app's REST and client-event limits in protocol's terms.
func (a *App) Limits() protocol.Limits {
	return protocol.Limits{
		MaxDataBytes:   a.MaxEventDataBytes,
		MaxChannels:    a.MaxChannelsPerEvent,
		MaxBatch:       a.MaxBatchSize,
		MaxEventName:   a.MaxEventNameLength,
		MaxChannelName: a.MaxChannelNameLength,
	}
}

// SoketiErrors reports whether refused subscriptions get a channel-scoped
// pusher:subscription_error instead of pusher:error.
func (a *App) SoketiErrors() bool { return a.SubscriptionErrorMode == SubscriptionErrorsSoketi }

// NATSUser is the app's NATS user name: NATS.User, or the app id.
func (a *App) NATSUser() string {
	if a.NATS.User != "" {
		return a.NATS.User
	}
	return a.ID
}

// NATSPassword is the app's NATS password: NATS.Password, or the app secret.
func (a *App) NATSPassword() string {
	if a.NATS.Password != "" {
		return a.NATS.Password
	}
	return a.Secret
}

// Window is a replay window: how long and how many events per channel a
// stream keeps. A zero field means "the node's default".
type Window struct {
	MaxAge            time.Duration
	MaxMsgsPerChannel int64
}

// ReplayWindow is the app's own replay window over def, the node's
// (bus.stream): each zero field of the app's keeps def's value.
func (a *App) ReplayWindow(def Window) Window {
	w := Window{MaxAge: a.ReplayMaxAge.D(), MaxMsgsPerChannel: a.ReplayMaxMsgsPerChannel}
	if w.MaxAge == 0 {
		w.MaxAge = def.MaxAge
	}
	if w.MaxMsgsPerChannel == 0 {
		w.MaxMsgsPerChannel = def.MaxMsgsPerChannel
	}
	return w
}
