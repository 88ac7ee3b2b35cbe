package gateway

import "herald/presence"

// Presence returns the node's presence registry: its cluster-wide view of
// presence members and subscriber counts, which the webhook ledger
// (lifecycle/ledger.go) reads when it decides a channel's events. Callers
// must not hold a lock the registry's Listener takes (docs/locks.md).
func (g *Gateway) Presence() presence.Registry { return g.presence }
