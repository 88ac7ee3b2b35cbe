package node

import (
	"bytes"
	"fmt"
	"slices"

	"herald/configs"
)

// A closed cluster (docs/deploy.md, "A closed cluster"): cluster.secret_key
// goes to memberlist (cluster.Config.SecretKeys), cluster.route_auth to the
// NATS routes (bus.ClusterConfig.Passwords). What a reload can change:
//
//   - the gossip keys (secret_key and previous_secret_keys) while the
//     node's gossip is encrypted: the keyring is replaced live
//     (cluster.SetKeys). Turning encryption on or off needs a restart.
//   - the route passwords accepted (route_auth and previous_route_auth)
//     while the routes are closed: replaced live (bus.SetRoutePasswords),
//     the password the node sends staying accepted. The password it sends
//     (route_auth) is read at start: a changed route_auth is listed as
//     needing a restart even though the new one is accepted at once.
//
// The values never reach a log, status or a reload's answer: those say
// only which keys changed.

// closedKeys is what a reload applied last; guarded by ops.reload.
type closedKeys struct {
	gossip [][]byte
	routes []string
}

func (o *ops) initClosed(cfg *configs.Config) {
	o.closed = closedKeys{gossip: cfg.Cluster.GossipKeys(), routes: cfg.Cluster.RoutePasswords()}
}

// reloadClosed applies cfg's closed-cluster keys as far as they apply live
// and returns the config keys it took care of (they are not listed as
// needing a restart). Called by Reload under ops.reload.
func (n *Node) reloadClosed(cfg *configs.Config, ch *Changes) map[string]bool {
	done := map[string]bool{}
	if n.cl == nil {
		return done
	}
	cl := &cfg.Cluster
	if keys := cl.GossipKeys(); n.cl.Encrypted() && len(keys) > 0 {
		done["cluster.secret_key"], done["cluster.previous_secret_keys"] = true, true
		if !slices.EqualFunc(keys, n.ops.closed.gossip, bytes.Equal) {
			if err := n.cl.SetKeys(keys); err != nil {
				// Validate checked the keys; keep the old ring.
				n.log.Error("config reload: gossip keys not replaced", "err", err)
				ch.Warnings = append(ch.Warnings, fmt.Sprintf("cluster.secret_key: not applied: %v", err))
			} else {
				n.ops.closed.gossip, ch.GossipKeys = keys, true
			}
		}
	}
	if pw := cl.RoutePasswords(); len(pw) > 0 && len(n.ops.closed.routes) > 0 && cfg.Bus.Mode != configs.BusExternal {
		done["cluster.previous_route_auth"] = true
		done["cluster.route_auth"] = cl.RouteAuth == n.cfg.Cluster.RouteAuth // the one sent is read at start
		if !slices.Equal(pw, n.ops.closed.routes) && n.bus.SetRoutePasswords(pw) {
			n.ops.closed.routes, ch.RoutePasswords = pw, true
		}
	}
	return done
}
