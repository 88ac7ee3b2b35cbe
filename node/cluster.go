package node

import (
	"fmt"

	"time"

	"herald/bus"
	"herald/cluster"
	"herald/configs"
	"herald/presence"
)

// clusterReadyTimeout is how long a clustered node waits for the others
// (a JetStream meta leader needs a majority): nodes may be started in any
// order, minutes apart.
const clusterReadyTimeout = 10 * time.Minute

// clusterPublishTimeout bounds a REST publish in a cluster: a stream-leader
// election after a crash takes 5-8 s, which a publish must ride through.
const clusterPublishTimeout = 15 * time.Second

// startCluster joins the node's memberlist cluster. The presence registry
// and the channel queries are built on it later.
func (n *Node) startCluster() error {
	cc := n.cfg.Cluster
	route := cc.RouteAdvertise
	if route == "" {
		route = cc.RouteListen
	}
	cl, err := cluster.Start(cluster.Config{
		Name:      cc.Name,
		NodeName:  cc.LocalName(),
		Bind:      cc.Bind,
		Advertise: cc.Advertise,
		Seeds:     cc.Seeds,
		Preset:    cc.Preset,
		// Encrypted and authenticated gossip (closed.go); nil: in clear.
		SecretKeys: cc.GossipKeys(),
		Meta:       cluster.Meta{Boot: time.Now().UnixNano(), HTTP: n.ln.Addr().String(), Route: route},
		Logger:     n.log.With("part", "cluster"),
	})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	n.cl = cl
	return nil
}

// presenceFactory gives the gateway the gossiped presence registry in a
// cluster, nil (the single-node registry) otherwise.
func (n *Node) presenceFactory() func(presence.Listener) presence.Registry {
	if n.cl == nil {
		return nil
	}
	return func(l presence.Listener) presence.Registry {
		n.gossip = presence.NewGossip(n.cl, l)
		return n.gossip
	}
}

// isOwner is the gateway's ownership test: the rendezvous owner among live
// members in a cluster, every channel on a single node. The lifecycle Decider calls it
// under the presence registry's lock; Owner takes no lock (docs/locks.md).
func (n *Node) isOwner() func(app, channel string) bool {
	if n.cl == nil {
		return nil
	}
	cl := n.cl
	return func(app, channel string) bool { return cl.Owner(app, channel) == cl.LocalName() }
}

// clusterBus fills the bus config's cluster part.
func clusterBus(cc configs.Cluster, bc *bus.Config) {
	if !cc.Enabled() {
		return
	}
	bc.ServerName = cc.LocalName()
	bc.Cluster = bus.ClusterConfig{Name: cc.Name, Listen: cc.RouteListen, Advertise: cc.RouteAdvertise, Routes: cc.Routes,
		Passwords: cc.RoutePasswords(), // closed routes (closed.go); nil: open
		TLS:       bus.RouteTLS{CertFile: cc.RouteTLS.CertFile, KeyFile: cc.RouteTLS.KeyFile, CAFile: cc.RouteTLS.CAFile}}
	if cc.Region != "" { // docs/regions.md
		bc.Cluster.Region, bc.Cluster.GatewayListen, bc.Cluster.HomeRegion = cc.Region, cc.GatewayListen, cc.HomeRegion
		bc.Cluster.GatewayAdvertise = cc.GatewayAdvertise
		for _, g := range cc.Gateways {
			bc.Cluster.Gateways = append(bc.Cluster.Gateways, bus.GatewayRemote{Name: g.Name, URLs: g.URLs})
		}
	}
	bc.ReadyTimeout = clusterReadyTimeout
}

// stopCluster leaves the cluster gracefully, so the others drop this node's
// presence members at once instead of after failure detection.
func (n *Node) stopCluster() {
	if n.gossip != nil {
		n.gossip.Close()
	}
	if n.cl != nil {
		if err := n.cl.Leave(2 * time.Second); err != nil {
			n.log.Warn("cluster leave", "err", err)
		}
		_ = n.cl.Shutdown()
	}
}

// Cluster returns the node's membership, or nil on a single node.
func (n *Node) Cluster() *cluster.Cluster { return n.cl }
