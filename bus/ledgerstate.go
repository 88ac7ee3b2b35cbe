package bus

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"herald/lifecycle"
)

// The webhook state: what the owner of each channel emitted as occupancy
// and presence webhook events (lifecycle/ledger.go, docs/webhooks.md "Who
// decides occupancy and presence events"). It is a JetStream KV bucket,
// WebhookStateBucket, replicated like the app streams, one key per channel
// (<app>.<EncodeKeyToken(channel)>), one revision kept per key. Every write
// is a compare-and-set on the key's revision, which is what lets two nodes
// that both believe they own a channel, or a new owner after a crash, agree
// on one history: the loser of a race re-reads.
//
// An emptied record is purged (a marker that removes every revision of the
// key), and the marker expires after webhookStateMarkerTTL where the server
// supports marker TTLs, so the bucket holds only channels with something to
// remember. Revisions are stream sequences, never reused, so a channel's
// next record after a purge has a revision it never had before.

// webhookStateMarkerTTL is how long a purged key's marker stays.
const webhookStateMarkerTTL = time.Hour

// WebhookState is the webhook state bucket: lifecycle.Records over
// JetStream KV. Build it with Bus.WebhookState.
type WebhookState struct {
	kv        jetstream.KeyValue
	markerTTL bool // purge markers expire (the bucket has LimitMarkerTTL)
}

var _ lifecycle.Records = (*WebhookState)(nil)

// WebhookState creates the webhook state bucket, or binds to it, with the
// app streams' replica count. Attempts are retried as EnsureApp's are (a
// JetStream leader may be elected meanwhile), in a cluster until ctx's
// deadline. A server too old for marker TTLs gets a bucket without them
// (purged keys then leave a marker each, forever).
func (b *Bus) WebhookState(ctx context.Context) (*WebhookState, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	cfg := jetstream.KeyValueConfig{
		Bucket:         WebhookStateBucket,
		Description:    "Herald: occupancy and presence webhook events emitted, per channel",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       b.replicas(),
		LimitMarkerTTL: webhookStateMarkerTTL,
	}
	kv, err := b.ensureKV(ctx, cfg)
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		cfg.LimitMarkerTTL = 0
		kv, err = b.ensureKV(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	return &WebhookState{kv: kv, markerTTL: cfg.LimitMarkerTTL > 0}, nil
}

// ensureKV creates or updates a KV bucket, retrying like ensureStream.
func (b *Bus) ensureKV(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	attempts := ensureAttempts
	if _, ok := ctx.Deadline(); ok && b.replicated() {
		attempts = math.MaxInt
	}
	var err error
	for attempt := 1; attempt <= attempts; attempt++ {
		actx, cancel := context.WithTimeout(ctx, ensureAttemptWait)
		var kv jetstream.KeyValue
		kv, err = b.js.CreateOrUpdateKeyValue(actx, cfg)
		cancel()
		if err == nil {
			return kv, nil
		}
		if ctx.Err() != nil || !retryable(err) || attempt == attempts {
			break
		}
		b.log.Debug("bus: create kv bucket: retrying", "bucket", cfg.Bucket, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("bus: create kv bucket %q: %w", cfg.Bucket, err)
}

// StateKey is the key of (app, channel) in the webhook state bucket.
func StateKey(app, channel string) string { return app + "." + EncodeKeyToken(channel) }

// ParseStateKey reverses StateKey.
func ParseStateKey(key string) (app, channel string, err error) {
	app, tok, ok := strings.Cut(key, ".")
	if !ok || !ValidApp(app) {
		return "", "", fmt.Errorf("%w: webhook state key %q", ErrInvalidApp, key)
	}
	channel, err = DecodeKeyToken(tok)
	if err != nil {
		return "", "", fmt.Errorf("bus: webhook state key %q: %w", key, err)
	}
	return app, channel, nil
}

// stateKey validates app and channel and returns their key.
func stateKey(app, channel string) (string, error) {
	if !ValidApp(app) {
		return "", fmt.Errorf("%w: %q", ErrInvalidApp, app)
	}
	if channel == "" {
		return "", ErrInvalidChannel
	}
	return StateKey(app, channel), nil
}

// Get implements lifecycle.Records: the record and its revision, or nil
// and 0 when the channel has none (never written, or purged).
func (s *WebhookState) Get(ctx context.Context, app, channel string) ([]byte, uint64, error) {
	key, err := stateKey(app, channel)
	if err != nil {
		return nil, 0, err
	}
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("bus: webhook state get %s: %w", key, err)
	}
	return e.Value(), e.Revision(), nil
}

// Put implements lifecycle.Records: a compare-and-set on rev (0: the key
// has no record). A lost race is lifecycle.ErrRevision.
func (s *WebhookState) Put(ctx context.Context, app, channel string, value []byte, rev uint64) (uint64, error) {
	key, err := stateKey(app, channel)
	if err != nil {
		return 0, err
	}
	var next uint64
	if rev == 0 {
		next, err = s.kv.Create(ctx, key, value)
	} else {
		next, err = s.kv.Update(ctx, key, value, rev)
	}
	if err != nil {
		return 0, fmt.Errorf("bus: webhook state put %s at %d: %w", key, rev, revisionErr(err))
	}
	return next, nil
}

// Delete implements lifecycle.Records: purges the key if its revision is
// still rev.
func (s *WebhookState) Delete(ctx context.Context, app, channel string, rev uint64) error {
	key, err := stateKey(app, channel)
	if err != nil {
		return err
	}
	opts := []jetstream.KVDeleteOpt{jetstream.LastRevision(rev)}
	if s.markerTTL {
		opts = append(opts, jetstream.PurgeTTL(webhookStateMarkerTTL))
	}
	if err := s.kv.Purge(ctx, key, opts...); err != nil {
		return fmt.Errorf("bus: webhook state delete %s at %d: %w", key, rev, revisionErr(err))
	}
	return nil
}

// Channels implements lifecycle.Records: every channel with a record.
// Keys that do not parse (not written by Herald) are skipped.
func (s *WebhookState) Channels(ctx context.Context, fn func(app, channel string)) error {
	keys, err := s.kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bus: webhook state keys: %w", err)
	}
	for _, k := range keys {
		if app, channel, err := ParseStateKey(k); err == nil {
			fn(app, channel)
		}
	}
	return nil
}

// revisionErr marks a compare-and-set the record's revision refused as
// lifecycle.ErrRevision.
func revisionErr(err error) error {
	var apiErr *jetstream.APIError
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("%w: %w", lifecycle.ErrRevision, err)
	}
	return err
}
