package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Webhook streams: the bus owns their names, subjects and replicas; package
// webhook owns what is in them and their consumers (docs/webhooks.md).
//
//   - HERALD-WEBHOOKS, the outbox: a work-queue stream on
//     herald.sys.webhooks.out.<app>.<target>.<part>, replicated like the app
//     streams, file storage, with a dedupe window so that an event written
//     twice with the same Nats-Msg-Id (a new owner re-deciding a transition,
//     a resent publish) is stored once. A message leaves it when a delivery
//     worker acknowledges it (delivered, dead-lettered or dropped).
//   - HERALD-WEBHOOKS-DEAD, the dead letters: a limits stream on
//     herald.sys.webhooks.dead.<app>.<target>, kept for DeadLetterMaxAge, so
//     that herald webhooks replay can pick an app and a period.

// WebhookDedupeWindow is the outbox's Duplicates: how long a written event
// id is remembered. It covers a publish's resends and an owner change.
const WebhookDedupeWindow = 5 * time.Minute

// webhookOutboxSlack is how much longer than RetryFor the outbox keeps a
// message nobody consumes (a removed target's, missed by its purge): the
// delivery workers dead-letter every event they see before then.
const webhookOutboxSlack = time.Hour

// WebhookStreamsConfig sizes the webhook streams.
type WebhookStreamsConfig struct {
	RetryFor         time.Duration // webhooks.retry_for; the outbox's MaxAge is this plus an hour
	DeadLetterMaxAge time.Duration // webhooks.dead_letter_max_age; 0 = unlimited
}

// WebhookStreams is the bus's part of webhook delivery: both streams, made
// sure of, and a JetStream context for their consumers and publishes.
type WebhookStreams struct {
	JS       jetstream.JetStream
	Outbox   jetstream.Stream
	Dead     jetstream.Stream
	Replicas int // of both streams (and so of the outbox's consumers)
}

// EnsureWebhookStreams creates or updates both webhook streams, retried
// as EnsureApp's are. asyncErr, when set, is called (on nats.go's
// goroutine) for every asynchronous publish on the returned JetStream
// context that fails. It needs streams on.
func (b *Bus) EnsureWebhookStreams(ctx context.Context, cfg WebhookStreamsConfig, asyncErr func(error)) (*WebhookStreams, error) {
	if !b.cfg.StreamEnabled {
		return nil, fmt.Errorf("bus: webhook streams need streams on (bus.stream.enabled)")
	}
	if b.closed.Load() {
		return nil, ErrClosed
	}
	outbox := jetstream.StreamConfig{
		Name:       WebhookOutboxStream,
		Subjects:   []string{webhookOutboxRoot + ">"},
		Storage:    jetstream.FileStorage,
		Replicas:   b.replicas(),
		Retention:  jetstream.WorkQueuePolicy,
		Discard:    jetstream.DiscardOld,
		Duplicates: WebhookDedupeWindow,
	}
	if cfg.RetryFor > 0 {
		outbox.MaxAge = cfg.RetryFor + webhookOutboxSlack
	}
	dead := jetstream.StreamConfig{
		Name:      WebhookDeadStream,
		Subjects:  []string{webhookDeadRoot + ">"},
		Storage:   jetstream.FileStorage,
		Replicas:  b.replicas(),
		Retention: jetstream.LimitsPolicy,
		Discard:   jetstream.DiscardOld,
		MaxAge:    cfg.DeadLetterMaxAge,
	}
	outboxStream, err := b.ensureStream(ctx, outbox)
	if err != nil {
		return nil, err
	}
	deadStream, err := b.ensureStream(ctx, dead)
	if err != nil {
		return nil, err
	}
	opts := []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncMaxPending(asyncMaxPending),
		jetstream.WithPublishAsyncTimeout(asyncAckTimeout),
	}
	if asyncErr != nil {
		opts = append(opts, jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) { asyncErr(err) }))
	}
	var js jetstream.JetStream
	if b.cfg.Mode == ModeExternal && b.cfg.JetStreamDomain != "" {
		js, err = jetstream.NewWithDomain(b.nc, b.cfg.JetStreamDomain, opts...)
	} else {
		js, err = jetstream.New(b.nc, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("bus: webhook jetstream: %w", err)
	}
	replicas := b.replicas()
	if b.remoteRegion() { // the home region's count, not this region's (region.go)
		replicas = outboxStream.CachedInfo().Config.Replicas
	}
	return &WebhookStreams{JS: js, Outbox: outboxStream, Dead: deadStream, Replicas: replicas}, nil
}
