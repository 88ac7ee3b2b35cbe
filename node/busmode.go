package node

import (
	"herald/bus"
	"herald/configs"
)

// Where NATS runs: bus.mode and its keys (docs/nats.md, "External NATS" and
// "Leaf node"). Kept apart from the rest of the node's wiring.

// busMode applies bus.mode and its keys to bc, after the rest of the bus
// config (clusterBus included). In external mode the node runs no NATS
// server, so there is no client port, no app users and no NATS routes: a
// clustered node's peers share the external deployment instead, and the
// deployment authenticates backends itself.
func busMode(cfg configs.Bus, bc *bus.Config) {
	switch cfg.Mode {
	case configs.BusExternal:
		bc.Mode = bus.ModeExternal
		bc.URLs, bc.Replicas = cfg.URLs, cfg.Replicas
		bc.ClientListen, bc.ClientUsers, bc.ClientSharedInbox = "", nil, false
		bc.Cluster = bus.ClusterConfig{}
	case configs.BusLeaf:
		bc.Mode = bus.ModeLeaf
		bc.LeafRemotes = cfg.LeafRemotes
	default:
		bc.Mode = bus.ModeEmbedded
		return
	}
	bc.Credentials, bc.User, bc.Password = cfg.Credentials, cfg.User, cfg.Password
	bc.JetStreamDomain = cfg.JetStreamDomain
}

// natsAPIWanted reports whether the node answers the NATS API subjects
// (herald.<app>.api.*): with a client port, and always in external and leaf
// mode, where backends reach the node through the existing deployment.
func natsAPIWanted(cfg configs.Bus) bool {
	return cfg.ClientListen != "" || cfg.Mode == configs.BusExternal || cfg.Mode == configs.BusLeaf
}
