package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
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

// A new owner takes over while the groups a dead node led elect new
// leaders (4 to 9 s after a kill -9), so no call here waits on a leader
// that is gone:
//
//   - Get and Channels are direct gets, which any current replica answers,
//     leader or not. Listing with KeyValue.Keys instead would create an
//     ordered consumer, which needs the meta leader and the stream's
//     leader: with either on the dead node the request gets no answer
//     until its context ends, and the ledger's takeover scan missed the
//     channels only the records know of (tests/e2e TestClusterWebhooks).
//   - A call that finds no responder (a write while the stream has no
//     leader; a read in the 2 s after a leader change before the followers
//     serve direct gets) is tried again every webhookStateRetry until ctx
//     ends. The compare-and-set makes a second write safe: one that landed
//     after all comes back as lifecycle.ErrRevision, and the ledger
//     re-reads.

// Listing and retry timing.
const (
	webhookStatePage      = 256                    // records per direct get of Channels
	webhookStatePageWait  = 5 * time.Second        // per page, within the caller's ctx
	webhookStateRetry     = 250 * time.Millisecond // between calls that found no responder
	webhookStateKeyPrefix = "$KV." + WebhookStateBucket + "."
)

// WebhookState is the webhook state bucket: lifecycle.Records over
// JetStream KV. Build it with Bus.WebhookState.
type WebhookState struct {
	kv        jetstream.KeyValue
	nc        *nats.Conn
	directAPI string // the direct get subject of the bucket's stream
	markerTTL bool   // purge markers expire (the bucket has LimitMarkerTTL)
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
	return &WebhookState{
		kv:        kv,
		nc:        b.nc,
		directAPI: apiPrefix(b.js.Options()) + "DIRECT.GET.KV_" + WebhookStateBucket,
		markerTTL: cfg.LimitMarkerTTL > 0,
	}, nil
}

// ensureKV creates or updates a KV bucket, retrying like ensureStream.
func (b *Bus) ensureKV(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Placement = b.placement()
	return ensure(ctx, b, "kv bucket", cfg.Bucket, func(actx context.Context) (jetstream.KeyValue, error) {
		if b.remoteRegion() { // only the home region creates (region.go)
			return b.lookupKV(actx, cfg.Bucket)
		}
		return b.js.CreateOrUpdateKeyValue(actx, cfg)
	})
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
	var e jetstream.KeyValueEntry
	err = whileLeaderless(ctx, func() (err error) {
		e, err = s.kv.Get(ctx, key)
		return err
	})
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
	err = whileLeaderless(ctx, func() (err error) {
		if rev == 0 {
			next, err = s.kv.Create(ctx, key, value)
		} else {
			next, err = s.kv.Update(ctx, key, value, rev)
		}
		return err
	})
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
	if err := whileLeaderless(ctx, func() error { return s.kv.Purge(ctx, key, opts...) }); err != nil {
		return fmt.Errorf("bus: webhook state delete %s at %d: %w", key, rev, revisionErr(err))
	}
	return nil
}

// Channels implements lifecycle.Records: every channel with a record.
// It reads the bucket's stream in pages of direct gets (any replica
// answers, leader or not), skipping purge and delete markers; keys that do
// not parse (not written by Herald) are skipped. A replica may answer a
// write or two behind the leader: the ledger's next scan sees those.
func (s *WebhookState) Channels(ctx context.Context, fn func(app, channel string)) error {
	for seq := uint64(1); seq != 0; {
		err := whileLeaderless(ctx, func() (err error) {
			seq, err = s.channelsPage(ctx, seq, fn)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// channelsPage lists the records stored at sequence from and after, up to
// webhookStatePage of them, and returns where the next page starts (0:
// none left).
func (s *WebhookState) channelsPage(ctx context.Context, from uint64, fn func(app, channel string)) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, webhookStatePageWait)
	defer cancel()
	req, err := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
		Batch   int    `json:"batch"`
	}{from, webhookStateKeyPrefix + ">", webhookStatePage})
	if err != nil {
		return 0, fmt.Errorf("bus: webhook state list: %w", err)
	}
	inbox := s.nc.NewInbox()
	sub, err := s.nc.SubscribeSync(inbox)
	if err != nil {
		return 0, fmt.Errorf("bus: webhook state list: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.nc.PublishRequest(s.directAPI, inbox, req); err != nil {
		return 0, fmt.Errorf("bus: webhook state list: %w", err)
	}
	last := from - 1
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return 0, fmt.Errorf("bus: webhook state list from %d: %w", from, err)
		}
		h := m.Header
		switch st := h.Get(headerStatus); st {
		case "":
		case "204": // end of this page
			if pending, _ := strconv.ParseUint(h.Get(headerNumPending), 10, 64); pending == 0 || last < from {
				return 0, nil
			}
			return last + 1, nil
		case "404": // nothing at or after from
			return 0, nil
		default:
			return 0, fmt.Errorf("bus: webhook state list from %d: status %s %s", from, st, h.Get("Description"))
		}
		seq, err := strconv.ParseUint(h.Get(headerSequence), 10, 64)
		if err != nil || seq < from {
			return 0, fmt.Errorf("bus: webhook state list from %d: bad sequence %q", from, h.Get(headerSequence))
		}
		last = seq
		if h.Get(kvOperationHeader) != "" || h.Get(jetstream.MarkerReasonHeader) != "" {
			continue // deleted or purged
		}
		key, ok := strings.CutPrefix(h.Get(jetstream.SubjectHeader), webhookStateKeyPrefix)
		if !ok {
			continue
		}
		if app, channel, err := ParseStateKey(key); err == nil {
			fn(app, channel)
		}
	}
}

// Headers of a direct get reply: KV-Operation marks a KV delete or purge
// (nats.go's KeyValue writes it); Nats-Num-Pending, on a batch's last
// reply, counts what matched after it.
const (
	kvOperationHeader = "KV-Operation"
	headerNumPending  = "Nats-Num-Pending"
)

// whileLeaderless runs op until it returns anything but "no server leads
// the stream" (no responder: followers ignore what is published to their
// stream) or ctx ends.
func whileLeaderless(ctx context.Context, op func() error) error {
	for {
		err := op()
		if err == nil || !leaderless(err) {
			return err
		}
		t := time.NewTimer(webhookStateRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

func leaderless(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 503 {
		return true
	}
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
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
