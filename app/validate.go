package app

import (
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nkeys"
)

// Patterns for app credentials. Keys appear in WebSocket URLs (/app/{key}),
// ids in REST paths, NATS subjects and stream names.
var (
	idPattern  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	keyPattern = regexp.MustCompile(`^[A-Za-z0-9_\-.]{1,128}$`)
	// natsUserPattern keeps NATS user names usable in nats:// URLs and apart
	// from the node's internal user (which starts with '$').
	natsUserPattern = regexp.MustCompile(`^[A-Za-z0-9_\-.]{1,128}$`)
)

// Replay windows an app may set: the same range as bus.stream.max_age.
const (
	minReplayAge = time.Second
	maxReplayAge = 720 * time.Hour
)

// FieldError is a problem with one key of an app. Key is the key path
// inside the app ("max_batch_size", "nats.user"); configs prefixes it with
// the app's place in the file ("apps[1].").
type FieldError struct {
	Key     string
	Problem string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Problem }

func fieldErr(key, problem string) *FieldError { return &FieldError{Key: key, Problem: problem} }

// Validate checks every key of the app and returns the first problem.
func (a *App) Validate() *FieldError {
	if err := matches("id", a.ID, idPattern); err != nil {
		return err
	}
	if err := matches("key", a.Key, keyPattern); err != nil {
		return err
	}
	if a.Secret == "" {
		return fieldErr("secret", "must not be empty")
	}
	if a.MaxConnections < 0 {
		return fieldErr("max_connections", fmt.Sprintf("must be 0 (unlimited) or more, got %d", a.MaxConnections))
	}
	for _, r := range []struct {
		key    string
		v      int64
		lo, hi int64
	}{
		{"max_event_data_bytes", int64(a.MaxEventDataBytes), 1, 1 << 20},
		{"max_channels_per_event", int64(a.MaxChannelsPerEvent), 1, 1000},
		{"max_batch_size", int64(a.MaxBatchSize), 1, 1000},
		{"max_event_name_length", int64(a.MaxEventNameLength), 1, 1000},
		{"max_channel_name_length", int64(a.MaxChannelNameLength), 1, 1000},
	} {
		if err := inRange(r.key, r.v, r.lo, r.hi); err != nil {
			return err
		}
	}
	if a.SubscriptionErrorMode != SubscriptionErrorsPusher && a.SubscriptionErrorMode != SubscriptionErrorsSoketi {
		return fieldErr("subscription_error_mode", fmt.Sprintf("%s is not one of %s, %s",
			quote(a.SubscriptionErrorMode), SubscriptionErrorsPusher, SubscriptionErrorsSoketi))
	}
	for _, r := range []struct {
		key    string
		v      int64
		lo, hi int64
	}{
		{"max_presence_members", int64(a.MaxPresenceMembers), 1, 100000},
		{"max_presence_user_info_bytes", int64(a.MaxPresenceUserInfoBytes), 1, 65536},
		{"client_event_rate", int64(a.ClientEventRate), 1, 10000},
		{"max_channels_per_connection", int64(a.MaxChannelsPerConnection), 1, 100000},
		{"subscribe_rate", int64(a.SubscribeRate), 1, 100000},
		{"max_concurrent_rest_requests", int64(a.MaxConcurrentRESTRequests), 1, 100000},
		{"replay_max_msgs_per_channel", a.ReplayMaxMsgsPerChannel, 0, 10_000_000},
	} {
		if err := inRange(r.key, r.v, r.lo, r.hi); err != nil {
			return err
		}
	}
	if d := a.ReplayMaxAge.D(); d != 0 && (d < minReplayAge || d > maxReplayAge) {
		return fieldErr("replay_max_age", fmt.Sprintf("must be from %s to %s, got %s",
			Duration(minReplayAge), Duration(maxReplayAge), a.ReplayMaxAge))
	}
	if err := a.validateWebhooks(); err != nil {
		return err
	}
	if err := a.validateOrigins(); err != nil {
		return err
	}
	return a.validateNATS()
}

func (a *App) validateNATS() *FieldError {
	if a.NATS.User != "" {
		if err := matches("nats.user", a.NATS.User, natsUserPattern); err != nil {
			return err
		}
	}
	if a.NATS.Nkey != "" && !nkeys.IsValidPublicUserKey(a.NATS.Nkey) {
		return fieldErr("nats.nkey", fmt.Sprintf("%s is not a public user nkey (\"U\" and 55 more characters, as printed by nk -gen user -pubout)", quote(a.NATS.Nkey)))
	}
	return nil
}

// ValidateSet checks each app and what must be unique across them: ids,
// keys, NATS user names and nkeys (each is fenced to one app's subjects).
// It returns the index of the first app with a problem, or -1.
func ValidateSet(apps []App) (int, *FieldError) {
	if len(apps) == 0 {
		return -1, fieldErr("", "at least one app is required")
	}
	ids := make(map[string]int, len(apps))
	keys := make(map[string]int, len(apps))
	users := make(map[string]int, len(apps))
	nkeys := make(map[string]int)
	for i := range apps {
		a := &apps[i]
		if err := a.Validate(); err != nil {
			return i, err
		}
		if j, dup := ids[a.ID]; dup {
			return i, fieldErr("id", fmt.Sprintf("%s is already the id of apps[%d]", quote(a.ID), j))
		}
		ids[a.ID] = i
		if j, dup := keys[a.Key]; dup {
			return i, fieldErr("key", fmt.Sprintf("%s is already the key of apps[%d]", quote(a.Key), j))
		}
		keys[a.Key] = i
	}
	// A second pass, so that every app's own keys are checked before the
	// NATS credentials they default from (user = id).
	for i := range apps {
		a := &apps[i]
		if j, dup := users[a.NATSUser()]; dup {
			return i, fieldErr("nats.user", fmt.Sprintf("%s is already the NATS user of apps[%d] (the default user is the app id)", quote(a.NATSUser()), j))
		}
		users[a.NATSUser()] = i
		if a.NATS.Nkey == "" {
			continue
		}
		if j, dup := nkeys[a.NATS.Nkey]; dup {
			return i, fieldErr("nats.nkey", fmt.Sprintf("already the nkey of apps[%d]", j))
		}
		nkeys[a.NATS.Nkey] = i
	}
	return -1, nil
}

func matches(key, v string, re *regexp.Regexp) *FieldError {
	if v == "" {
		return fieldErr(key, "must not be empty")
	}
	if !re.MatchString(v) {
		return fieldErr(key, fmt.Sprintf("%s must match %s", quote(v), re))
	}
	return nil
}

func inRange(key string, v, lo, hi int64) *FieldError {
	if v < lo || v > hi {
		return fieldErr(key, fmt.Sprintf("must be from %d to %d, got %d", lo, hi, v))
	}
	return nil
}
