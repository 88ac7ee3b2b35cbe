// Package hook defines a webhook event as Pusher names its fields, and the
// Outbox it is written to: the seam between the parts that decide events
// (lifecycle.Ledger for occupancy and presence, the gateway for client_event
// and cache_miss) and the part that delivers them (package webhook, which
// implements Outbox). It is a leaf, so that lifecycle, which the bus
// imports, need not import webhook, which imports the bus.
package hook

import (
	"context"
	"encoding/json"
)

// Event is one event object of a webhook request, with Pusher's field
// names (docs/protocol.md §7): user ids and client-event data are strings.
type Event struct {
	// ID is unique per event and the same on every retry, so that a receiver
	// deduplicates; the outbox also deduplicates writes by it.
	ID      string `json:"id"`
	Name    string `json:"name"` // one of app.WebhookEventTypes
	Channel string `json:"channel"`

	UserID string `json:"user_id,omitempty"` // member_added, member_removed; client_event on presence channels

	// client_event only: the event's name, its data as the client sent it
	// (a string; always present on client_event, even when empty) and the
	// sender's socket id.
	Event    string `json:"event,omitempty"`
	Data     string `json:"data,omitempty"`
	SocketID string `json:"socket_id,omitempty"`

	SubscriptionCount *int `json:"subscription_count,omitempty"` // subscription_count only
}

// MarshalJSON writes data on every client_event, even an empty one.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	if e.Name != "client_event" || e.Data != "" {
		return json.Marshal(plain(e))
	}
	return json.Marshal(struct {
		plain
		Data string `json:"data"`
	}{plain: plain(e)})
}

// Outbox is where webhook events are written, once each. Enqueue stores
// the events of one app, in order, for every webhook of that app that wants
// them (app.Webhook.Wants), and returns once they are stored (a JetStream
// acknowledgement): from then on they are delivered or dead-lettered, never
// lost. A second Enqueue of an event with the same ID (a new owner node
// re-deciding the same transition) is dropped by the outbox.
type Outbox interface {
	Enqueue(ctx context.Context, app string, events []Event) error
}
