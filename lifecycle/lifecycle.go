// Package lifecycle owns channel lifecycle events: a channel became
// occupied or vacated, a user joined or left a presence channel, a channel's
// subscription count changed — cluster-wide, each decided once, by the
// channel's owner node, and handed to every consumer that subscribed (NATS
// presence subjects today; webhooks, the console and regions build on the
// same stream).
//
// The decisions come from cluster-wide state, never from a node's memory of
// what it decided before: every node's presence registry (presence.Local on
// one node, presence.Gossip in a cluster) reports each transition of the
// merged, cluster-wide view, and every node sees the same transitions. A
// Decider passes on only those of channels this node owns
// (cluster.Owner(app, channel)), so each transition leaves the cluster once,
// and a new owner after a crash or a membership change continues from the
// converged state without repeating what the old owner emitted.
// docs/lifecycle.md states the invariant and names the tests that guard it.
//
// The Decider's events are best-effort around membership changes (two
// believed owners, or none). Webhooks need each event exactly once, so the
// package also owns the webhook ledger (ledger.go, record.go): the owner
// reconciles a replicated record of what was emitted with the cluster-wide
// state and writes the difference into the webhook outbox
// (docs/webhooks.md, "Who decides occupancy and presence events").
package lifecycle

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"herald/presence"
)

// Kind is what happened to a channel. The values are the names Pusher gives
// the same events in its webhooks.
type Kind string

// The lifecycle event kinds.
const (
	// ChannelOccupied: the channel's first subscriber anywhere in the cluster.
	ChannelOccupied Kind = "channel_occupied"
	// ChannelVacated: the channel's last subscriber anywhere left (or its
	// node died).
	ChannelVacated Kind = "channel_vacated"
	// MemberAdded: a user's first connection joined a presence channel.
	MemberAdded Kind = "member_added"
	// MemberRemoved: a user's last connection left a presence channel.
	MemberRemoved Kind = "member_removed"
	// SubscriptionCount: the cluster-wide number of subscriptions of an
	// occupied channel changed.
	SubscriptionCount Kind = "subscription_count"
)

// Event is one lifecycle transition.
type Event struct {
	Kind    Kind
	App     string
	Channel string
	Time    time.Time // when this node saw the transition
	// UserID and UserInfo are the member of MemberAdded and MemberRemoved
	// (UserInfo only on MemberAdded, raw JSON, may be nil).
	UserID   string
	UserInfo json.RawMessage
	// Subscriptions is the cluster-wide subscription count after the
	// transition (ChannelOccupied, ChannelVacated, SubscriptionCount).
	Subscriptions int
}

// Consumer receives events. It is called synchronously, in the order the
// transitions happened, while the presence registry holds its lock: it must
// not block and must not call back into the registry. A consumer with slow
// work (an HTTP request) queues the event and returns.
type Consumer func(Event)

// Decider turns the registry's transitions into the events this node owns
// and hands them to its consumers. The zero value is not usable; build one
// with New. A nil *Decider ignores everything, so parts can call it
// unconditionally.
type Decider struct {
	isOwner func(app, channel string) bool

	mu        sync.Mutex // guards consumers' slice header on Subscribe
	consumers atomic.Pointer[[]Consumer]
	closed    atomic.Bool
}

// New returns a Decider that emits the transitions of channels for which
// isOwner reports true; nil isOwner means every channel (a single node).
func New(isOwner func(app, channel string) bool) *Decider {
	d := &Decider{isOwner: isOwner}
	d.consumers.Store(&[]Consumer{})
	return d
}

// Subscribe adds a consumer of every event emitted from now on.
func (d *Decider) Subscribe(c Consumer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := *d.consumers.Load()
	next := make([]Consumer, len(old), len(old)+1)
	copy(next, old)
	next = append(next, c)
	d.consumers.Store(&next)
}

// Observe takes one transition of the cluster-wide view, as a presence
// registry's Listener reports it, and emits it when this node owns the
// channel. It is safe for concurrent use and does not block beyond its
// consumers.
func (d *Decider) Observe(ch presence.Change) {
	if d == nil {
		return
	}
	cs := *d.consumers.Load()
	if len(cs) == 0 || d.closed.Load() || (d.isOwner != nil && !d.isOwner(ch.App, ch.Channel)) {
		return
	}
	ev, ok := eventOf(ch)
	if !ok {
		return
	}
	ev.Time = time.Now()
	for _, c := range cs {
		c(ev)
	}
}

// Close stops emitting: a node that is leaving the cluster (or, in tests,
// pretends to crash) decides nothing more, since the channels it owned move
// to other nodes, which decide from the state they see without it.
func (d *Decider) Close() {
	if d != nil {
		d.closed.Store(true)
	}
}
