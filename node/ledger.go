package node

import (
	"context"
	"fmt"
	"time"

	"herald/cluster"
	"herald/lifecycle"
	"herald/webhook"
)

// ledgerStartTimeout bounds creating the webhook state bucket at start
// (the bus is ready by then; a JetStream leader election may still run).
const ledgerStartTimeout = 30 * time.Second

// outboxForTest, when set, gives the node its webhook outbox: node tests
// plug in one of their own (a JetStream stream they read back).
var outboxForTest func(*Node) webhook.Outbox

// startLedger starts the webhook ledger when the node has an outbox: the
// owner of each channel decides its occupancy and presence webhook events
// from the cluster-wide state (lifecycle/ledger.go, docs/webhooks.md). It
// runs after the bus, the Decider and the gateway (its presence registry)
// exist, and follows membership so that a new owner takes over.
func (n *Node) startLedger() error {
	if outboxForTest != nil {
		n.outbox = outboxForTest(n)
	}
	if n.outbox == nil {
		return nil
	}
	st, ok := n.gw.Presence().(lifecycle.State)
	if !ok {
		return fmt.Errorf("node: webhook ledger: the presence registry %T cannot list its channels", n.gw.Presence())
	}
	ctx, cancel := context.WithTimeout(context.Background(), ledgerStartTimeout)
	defer cancel()
	records, err := n.bus.WebhookState(ctx)
	if err != nil {
		return fmt.Errorf("node: webhook ledger: %w", err)
	}
	led, err := lifecycle.NewLedger(lifecycle.LedgerConfig{
		Records: records,
		State:   st,
		Outbox:  n.outbox,
		Apps:    n.apps,
		IsOwner: n.isOwner(),
		Grace:   n.cfg.Webhooks.Grace.D(),
		Logger:  n.log.With("part", "ledger"),
	})
	if err != nil {
		return fmt.Errorf("node: webhook ledger: %w", err)
	}
	n.ledger = led
	n.lifecycle.Subscribe(led.Observe)
	if n.cl != nil {
		n.cl.Watch(func(ev cluster.Event) {
			if ev.Kind != cluster.Updated { // a restart under the same name moves no channel
				led.Takeover()
			}
		})
	}
	return nil
}
