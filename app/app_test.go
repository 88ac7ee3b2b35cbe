package app

import (
	"strings"
	"testing"
	"time"
)

func TestNewIsValid(t *testing.T) {
	a := New("id", "key", "secret")
	if err := a.Validate(); err != nil {
		t.Fatalf("New's defaults do not validate: %v", err)
	}
	lim := a.Limits()
	if lim.MaxDataBytes != 10240 || lim.MaxChannels != 100 || lim.MaxBatch != 10 || lim.MaxEventName != 200 || lim.MaxChannelName != 200 {
		t.Fatalf("limits %+v", lim)
	}
	if !a.IsEnabled() || a.SoketiErrors() || a.NATSUser() != "id" || a.NATSPassword() != "secret" {
		t.Fatalf("defaults %+v", a)
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		set  func(*App)
		key  string
		want string
	}{
		{"bad id", func(a *App) { a.ID = "a.b" }, "id", "must match"},
		{"empty key", func(a *App) { a.Key = "" }, "key", "must not be empty"},
		{"no secret", func(a *App) { a.Secret = "" }, "secret", "must not be empty"},
		{"negative connections", func(a *App) { a.MaxConnections = -1 }, "max_connections", "0 (unlimited) or more"},
		{"data too large", func(a *App) { a.MaxEventDataBytes = 2 << 20 }, "max_event_data_bytes", "from 1 to 1048576"},
		{"no channels", func(a *App) { a.MaxChannelsPerEvent = 0 }, "max_channels_per_event", "from 1 to 1000"},
		{"error mode", func(a *App) { a.SubscriptionErrorMode = "loud" }, "subscription_error_mode", `"loud" is not one of pusher, soketi`},
		{"members", func(a *App) { a.MaxPresenceMembers = 0 }, "max_presence_members", "from 1 to 100000"},
		{"rate", func(a *App) { a.ClientEventRate = 10001 }, "client_event_rate", "from 1 to 10000"},
		{"replay age", func(a *App) { a.ReplayMaxAge = Duration(time.Millisecond) }, "replay_max_age", "from 1s to 720h"},
		{"replay msgs", func(a *App) { a.ReplayMaxMsgsPerChannel = -1 }, "replay_max_msgs_per_channel", "from 0 to 10000000"},
		{"nats user", func(a *App) { a.NATS.User = "$sys" }, "nats.user", "must match"},
		{"nkey", func(a *App) { a.NATS.Nkey = "Unope" }, "nats.nkey", "not a public user nkey"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := New("id", "key", "secret")
			tc.set(&a)
			err := a.Validate()
			if err == nil || err.Key != tc.key || !strings.Contains(err.Problem, tc.want) {
				t.Fatalf("Validate = %v, want %s: ...%s...", err, tc.key, tc.want)
			}
		})
	}
}

func TestValidateSet(t *testing.T) {
	a, b := New("a", "ka", "s"), New("b", "kb", "s")
	if i, err := ValidateSet([]App{a, b}); err != nil {
		t.Fatalf("valid set: %d %v", i, err)
	}
	if _, err := ValidateSet(nil); err == nil {
		t.Fatal("no apps accepted")
	}
	dupKey := New("c", "ka", "s")
	if i, err := ValidateSet([]App{a, dupKey}); i != 1 || err == nil || err.Key != "key" {
		t.Fatalf("duplicate key: %d %v", i, err)
	}
	dupUser := New("d", "kd", "s")
	dupUser.NATS.User = "a" // the default user of app a
	if i, err := ValidateSet([]App{a, dupUser}); i != 1 || err == nil || err.Key != "nats.user" {
		t.Fatalf("duplicate NATS user: %d %v", i, err)
	}
}

func TestReplayWindow(t *testing.T) {
	def := Window{MaxAge: 2 * time.Minute, MaxMsgsPerChannel: 1000}
	a := New("a", "k", "s")
	if w := a.ReplayWindow(def); w != def {
		t.Fatalf("no window of its own: %+v", w)
	}
	a.ReplayMaxAge = Duration(time.Hour)
	if w := a.ReplayWindow(def); w.MaxAge != time.Hour || w.MaxMsgsPerChannel != 1000 {
		t.Fatalf("own age: %+v", w)
	}
}
