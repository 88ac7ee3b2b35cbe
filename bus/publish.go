package bus

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publication is one event for one channel.
type Publication struct {
	App     string
	Channel string
	Payload []byte // stored and delivered as is (a Pusher event JSON object); not copied, do not modify until Publish returns
	Exclude string // socket id that must not receive it; "" for none
}

// streamConfig is app's stream: file storage, one replica (min(3, nodes) in
// cluster mode, Config.Replicas in external mode; replicated streams get a
// dedupe window for resent publications: cluster.go),
// the replay window as limits, direct gets allowed, every stored message
// republished live.
func (b *Bus) streamConfig(app string) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:              StreamName(app),
		Subjects:          []string{storedWildcard(app)},
		Storage:           jetstream.FileStorage,
		Replicas:          b.replicas(),
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            b.cfg.window(app).MaxAge,
		MaxMsgsPerSubject: b.cfg.window(app).MaxMsgsPerChannel,
		AllowDirect:       true,
		RePublish: &jetstream.RePublish{
			Source:      storedWildcard(app),
			Destination: liveWildcard(app),
		},
	}
	if b.replicated() {
		cfg.Duplicates = b.dedupeWindow()
	}
	return cfg
}

// An app's streams, as bits of Bus.apps: which this Bus has ensured.
const (
	streamMain  uint8 = 1 << iota // HERALD_<app>
	streamCache                   // HERALD-CACHE_<app> (cache.go)
	streamBoth  = streamMain | streamCache
)

// EnsureApp creates app's streams (the main one and the cache one, cache.go)
// or updates them to the current config. Each attempt waits at most 2 s
// (JetStream API requests may go unanswered while a leader is elected);
// unanswered attempts are retried a few times while ctx allows. With streams
// off it only validates app.
func (b *Bus) EnsureApp(ctx context.Context, app string) error {
	return b.ensureStreams(ctx, app, streamBoth)
}

// UpdateApp updates app's streams that this Bus has ensured to the current
// config (an app's replay window changed) and creates none.
func (b *Bus) UpdateApp(ctx context.Context, app string) error {
	b.appsMu.RLock()
	have := b.apps[app]
	b.appsMu.RUnlock()
	if have == 0 {
		return nil
	}
	return b.ensureStreams(ctx, app, have)
}

// ensureStreams creates or updates the streams of app that want names.
func (b *Bus) ensureStreams(ctx context.Context, app string, want uint8) error {
	if !ValidApp(app) {
		return fmt.Errorf("%w: %q", ErrInvalidApp, app)
	}
	if !b.cfg.StreamEnabled {
		return nil
	}
	if b.closed.Load() {
		return ErrClosed
	}
	if want&streamMain != 0 {
		if _, err := b.ensureStream(ctx, b.streamConfig(app)); err != nil {
			return err
		}
	}
	if want&streamCache != 0 {
		if _, err := b.ensureStream(ctx, b.cacheStreamConfig(app)); err != nil {
			return err
		}
	}
	b.appsMu.Lock()
	b.apps[app] |= want
	b.appsMu.Unlock()
	return nil
}

// ensureStream creates or updates one stream, retrying as EnsureApp says; in
// cluster mode with a deadline on ctx, until that deadline (a leader
// election can outlast a few attempts). It returns the stream's handle from
// the create itself: in a cluster, a lookup right after it can still miss
// the new stream.
func (b *Bus) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	cfg.Placement = b.placement()
	return ensure(ctx, b, "stream", cfg.Name, func(actx context.Context) (jetstream.Stream, error) {
		if b.remoteRegion() { // only the home region creates (region.go)
			return b.lookupStream(actx, cfg.Name)
		}
		return b.js.CreateOrUpdateStream(actx, cfg)
	})
}

// ensure runs create (a stream's or a bucket's create-or-update) until it
// succeeds, retrying as EnsureApp says; what and name label the error.
func ensure[T any](ctx context.Context, b *Bus, what, name string, create func(context.Context) (T, error)) (T, error) {
	attempts := ensureAttempts
	if _, ok := ctx.Deadline(); ok && b.replicated() {
		attempts = math.MaxInt
	}
	var zero T
	var err error
	for attempt := 1; attempt <= attempts; attempt++ {
		actx, cancel := context.WithTimeout(ctx, ensureAttemptWait)
		v, cerr := create(actx)
		cancel()
		if err = cerr; err == nil {
			return v, nil
		}
		if ctx.Err() != nil || !retryable(err) || attempt == attempts {
			break
		}
		b.log.Debug("bus: create "+what+": retrying", "name", name, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		}
	}
	return zero, fmt.Errorf("bus: create %s %q: %w", what, name, err)
}

// retryable reports whether a JetStream API error may go away by itself:
// no answer in time, nobody answering yet, or the service not yet available.
// A request the server answered with a config error is not retried.
func retryable(err error) bool {
	if errors.Is(err, errNotYet) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503
	}
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

// ensureKnown ensures app's main stream once per Bus lifetime, so a publish
// to an app added after Start needs no separate EnsureApp call. The cache
// stream waits for the app's first cache channel (ensureCacheKnown): most
// apps have none, and a stream costs memory, a file and, in a cluster, a
// Raft group on every replica (docs/benchmarks.md "Apps at scale").
func (b *Bus) ensureKnown(ctx context.Context, app string) error {
	return b.ensureOnce(ctx, app, streamMain)
}

// ensureCacheKnown ensures app's cache stream once per Bus lifetime.
func (b *Bus) ensureCacheKnown(ctx context.Context, app string) error {
	return b.ensureOnce(ctx, app, streamCache)
}

func (b *Bus) ensureOnce(ctx context.Context, app string, want uint8) error {
	b.appsMu.RLock()
	have := b.apps[app]
	b.appsMu.RUnlock()
	if have&want == want {
		return nil
	}
	return b.ensureStreams(ctx, app, want)
}

// StreamKnown reports whether app's main stream was ensured by this Bus (at
// Start, by EnsureApp, or on first use).
func (b *Bus) StreamKnown(app string) bool {
	b.appsMu.RLock()
	have := b.apps[app]
	b.appsMu.RUnlock()
	return have&streamMain != 0
}

// check validates p before anything is sent.
func (b *Bus) check(p *Publication) error {
	if b.closed.Load() {
		return ErrClosed
	}
	if !ValidApp(p.App) {
		return fmt.Errorf("%w: %q", ErrInvalidApp, p.App)
	}
	if p.Channel == "" {
		return ErrInvalidChannel
	}
	return nil
}

// newMsg builds the NATS message for p: the stored subject with streams on,
// the live subject without.
func (b *Bus) newMsg(p *Publication) *nats.Msg {
	m := &nats.Msg{Data: p.Payload}
	if b.cfg.StreamEnabled {
		m.Subject = StoredSubject(p.App, p.Channel)
	} else {
		m.Subject = LiveSubject(p.App, p.Channel)
	}
	if p.Exclude != "" {
		m.Header = nats.Header{HeaderExclude: []string{p.Exclude}}
	}
	return m
}

// Publish stores one event in its app's stream and returns its serial (the
// stream sequence) once the server has acknowledged it; ctx bounds the wait
// (5 s without a deadline). The stream republishes it to every node's live
// subscribers. With streams off it is a core NATS publish onto the live
// subject, returned without waiting, and the serial is 0.
//
// An event for a cache channel is also written to the app's cache stream
// before Publish returns (cache.go). If that write fails, the error comes
// with the event's non-zero serial: the event was stored and is delivered,
// but LastEvent may still return an older one.
//
// In cluster mode an unanswered attempt is resent (deduplicated by the
// stream) until ctx ends (15 s without a deadline), so Publish rides through
// a stream leader change (cluster.go).
func (b *Bus) Publish(ctx context.Context, p Publication) (serial uint64, err error) {
	if err := b.check(&p); err != nil {
		return 0, err
	}
	m := b.newMsg(&p)
	if !b.cfg.StreamEnabled {
		if err := b.nc.PublishMsg(m); err != nil {
			return 0, fmt.Errorf("bus: publish %q: %w", m.Subject, err)
		}
		return 0, nil
	}
	if err := b.refuseFull(); err != nil { // at once, not after a wait for an ack that cannot come (disk.go)
		return 0, err
	}
	if !b.homeReachable() { // a region cut off from home answers at once (region.go)
		return 0, b.homeUnreachable()
	}
	if err := b.ensureKnown(ctx, p.App); err != nil {
		return 0, err
	}
	cache := IsCacheChannel(p.Channel)
	var began time.Time
	if cache {
		began = time.Now()
	}
	ack, err := b.publishStored(ctx, m) // in cluster mode: retried through a leader change
	if err != nil {
		return 0, fmt.Errorf("bus: publish %q: %w", m.Subject, b.publishErr(err))
	}
	if cache {
		if err := b.storeCache(ctx, &p, m, ack.Sequence, began); err != nil {
			return ack.Sequence, err
		}
	}
	return ack.Sequence, nil
}

// PublishBatch publishes every publication without waiting between them,
// then waits for all acknowledgements: Submit, then Wait (commit.go).
// serials[i] is the serial of ps[i] (all 0 with streams off). Publications
// to the same channel are stored in input order. On error, serials holds
// the serials acknowledged so far (0 for the others) and some later
// publications may have been stored anyway; nothing is sent if a
// publication fails validation. Cache channels are cached as by Publish
// (the last publication per channel) before it returns; a failed cache
// write is an error with every serial filled in.
func (b *Bus) PublishBatch(ctx context.Context, ps []Publication) (serials []uint64, err error) {
	return b.Submit(ctx, ps).Wait()
}
