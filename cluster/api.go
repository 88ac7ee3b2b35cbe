// Package cluster owns node identity and membership: a memberlist agent per
// node, the list of live members and what each publishes about itself (its
// NATS route and HTTP addresses, its boot epoch), channel ownership by
// rendezvous hashing over live members, and the gossip plumbing other
// packages (presence) use, encrypted and authenticated with the cluster's
// keyring when it has one (keyring.go). It holds no presence data itself.
package cluster

import (
	"log/slog"
)

// Meta is what a node publishes about itself in memberlist's node meta
// (at most 512 bytes encoded).
type Meta struct {
	// Boot is the node's boot epoch (unix nanos at start): a restarted node
	// has a new one, so state it owned before is superseded.
	Boot int64 `json:"b"`
	// HTTP is the node's client address (host:port of WebSocket + REST).
	HTTP string `json:"h,omitempty"`
	// Route is the node's NATS cluster route address (host:port).
	Route string `json:"r,omitempty"`
	// Draining is set by a node that is shutting down (Cluster.Drain): it
	// stays a member, so its presence and counts still count, but owns no
	// channel, so its sockets' removals are decided by the others.
	Draining bool `json:"d,omitempty"`
}

// Member is one live node.
type Member struct {
	Name string
	Addr string // memberlist host:port
	Meta Meta
}

// EventKind is a membership change.
type EventKind uint8

const (
	Joined EventKind = iota + 1
	Left             // left gracefully or was declared dead
	Updated
)

// Event is a membership change.
type Event struct {
	Kind   EventKind
	Member Member
}

// Handler is one subsystem's share of the gossip. Every method may be called
// concurrently and must not block (copy what you keep; the byte slices are
// not yours after the call).
type Handler interface {
	// NotifyMsg receives a message another node broadcast or sent for this
	// handler's kind.
	NotifyMsg(from string, msg []byte)
	// LocalState returns this handler's state for a push/pull exchange
	// (anti-entropy); join is true when a node is joining.
	LocalState(join bool) []byte
	// MergeRemoteState merges another node's LocalState.
	MergeRemoteState(from string, state []byte, join bool)
}

// Config sets up a node's membership.
type Config struct {
	// Name is the cluster's name; nodes with another name are not joined
	// (memberlist label).
	Name string
	// NodeName identifies the node in the cluster; unique, stable across
	// restarts.
	NodeName string
	// Bind is the memberlist host:port (TCP and UDP) to listen on; port 0
	// picks a free one (tests).
	Bind string
	// Advertise is the host:port other nodes reach this node at; "" means
	// Bind's.
	Advertise string
	// Seeds are other nodes' memberlist host:port addresses to join
	// through. Unreachable seeds are retried in the background.
	Seeds []string
	// Preset is "lan" (memberlist's LAN defaults, tuned so a dead node is
	// declared within 4.2 s), "local" (loopback tests: within 2.1 s) or
	// "wan" (one cluster across regions: within 10.5 s). See
	// FailureDetection.
	Preset string
	// SecretKeys, when set, encrypt and authenticate all gossip
	// (keyring.go): SecretKeys[0] is the key this node sends with, every
	// key is accepted. Each is 16, 24 or 32 bytes (AES-128/192/256). Nodes
	// without a key in common never join each other.
	SecretKeys [][]byte
	Meta       Meta
	Logger     *slog.Logger
}

// The implementation provides (cluster.go, config.go, delegate.go, events.go,
// join.go, owner.go), besides the constants GossipBudget, MaxMessageSize,
// DefaultPort and the errors ErrUnknownNode, ErrTooLarge, ErrStopped,
// ErrNoNodeName, ErrBadPreset:
//
//	func Start(cfg Config) (*Cluster, error)
//	func (c *Cluster) LocalName() string
//	func (c *Cluster) Addr() string                 // advertised memberlist host:port (the picked port when Bind has port 0)
//	func (c *Cluster) Members() []Member            // live members, this node included, sorted by name
//	func (c *Cluster) Owner(app, channel string) string // rendezvous hash of (app, channel) over live members that are not draining
//	func (c *Cluster) Drain() error                  // publish Meta.Draining: this node stops owning channels, stays a member
//	func OwnerOf(names []string, app, channel string) string // the same hash over a given name list
//	func (c *Cluster) Watch(fn func(Event))          // a Joined per current member, then membership events, in order, never concurrently
//	func (c *Cluster) Register(kind byte, h Handler) // right after Start; kinds 1..255; triggers a state exchange with live members
//	func (c *Cluster) Broadcast(kind byte, key string, msg []byte) // gossip to all; a newer message with the same kind+key replaces a queued older one; messages over MaxGossipPayload go by reliable send
//	func (c *Cluster) MaxGossipPayload() int         // largest Broadcast payload that goes by gossip (GossipBudget less the header)
//	func (c *Cluster) SendTo(node string, kind byte, msg []byte) error // reliable (TCP) to one node
//	func (c *Cluster) SetMeta(m Meta) error          // republish this node's Meta (others see Updated)
//	func (c *Cluster) Stats() Stats                  // queue depths and drop counters
//	func (c *Cluster) Leave(timeout time.Duration) error // graceful: others see Left at once
//	func (c *Cluster) Shutdown() error               // stop without leaving (what a crash looks like to others)
//	func (c *Cluster) Encrypted() bool              // gossip is encrypted (SecretKeys)
//	func (c *Cluster) SetKeys(keys [][]byte) error   // rotate: keys[0] sends, all accepted, the rest removed
//	func (c *Cluster) FailureDetection() time.Duration // upper bound until a crashed node is declared dead (4.2 s lan, 2.1 s local, 10.5 s wan, up to 10 nodes), for docs and tests
