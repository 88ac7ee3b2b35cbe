// Package webhook owns webhook delivery: the durable outbox every webhook
// event is written to once (a replicated JetStream work-queue stream), the
// delivery workers that batch, sign, send and retry them, the dead-letter
// stream, and the admin endpoints that report and replay them
// (docs/webhooks.md).
//
// Who writes events: the owner node of a channel writes its occupancy and
// presence transitions (lifecycle.Ledger, decided from the cluster-wide
// state); the node a socket is on writes client_event and cache_miss. The
// event type and the Outbox seam live in package hook.
package webhook

import "herald/hook"

// Event is one event object of a webhook request (hook.Event).
type Event = hook.Event

// Outbox is where webhook events are written once each (hook.Outbox); the
// Sender implements it.
type Outbox = hook.Outbox
