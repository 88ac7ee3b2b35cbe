package node

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"herald/cluster"
	"herald/gateway"
	"herald/webhook"
)

// webhookStartTimeout bounds making sure of the webhook streams: the bus
// has waited for JetStream already, so this covers a leader election.
const webhookStartTimeout = 30 * time.Second

// startWebhooks starts the webhook sender (docs/webhooks.md) when streams
// are on: always, even with no webhook configured, since a reload may add
// some (with none it runs no delivery goroutine). It is both the outbox the
// transition ledger writes to (n.outbox) and the gateway's sink for
// client_event and cache_miss.
func (n *Node) startWebhooks(reg prometheus.Registerer) error {
	if !n.bus.StreamEnabled() {
		for _, a := range n.apps.Table().All() {
			if len(a.Webhooks) > 0 {
				n.log.Warn("webhooks are configured but bus.stream is off: no webhook is sent (the outbox is a stream)", "app", a.ID)
			}
		}
		return nil
	}
	w := n.cfg.Webhooks
	var members func() int
	if cl := n.cl; cl != nil {
		members = func() int { return len(cl.Members()) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), webhookStartTimeout)
	defer cancel()
	s, err := webhook.Start(ctx, webhook.Config{
		Bus:              n.bus,
		Apps:             n.apps,
		RetryFor:         w.RetryFor.D(),
		Timeout:          w.Timeout.D(),
		BatchSize:        w.BatchSize,
		Workers:          w.Workers,
		DeadLetterMaxAge: w.DeadLetterMaxAge.D(),
		Members:          members,
		Tap:              n.tap,
		Registerer:       reg,
		Logger:           n.log.With("part", "webhook"),
	})
	if err != nil {
		return err
	}
	n.webhooks, n.outbox = s, s
	if n.cl != nil { // a node gone may hold delivery lanes' pins (webhook/pins.go)
		n.cl.Watch(func(ev cluster.Event) {
			if ev.Kind == cluster.Left {
				s.PeerGone()
			}
		})
	}
	return nil
}

// webhookSink is the gateway's Config.Webhooks: nil without a sender (a nil
// *Sender in the interface would not be nil).
func (n *Node) webhookSink() gateway.WebhookSink {
	if n.webhooks == nil {
		return nil
	}
	return n.webhooks
}
