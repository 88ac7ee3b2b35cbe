package cluster

import (
	"encoding/json"
	"fmt"
)

// Drain marks this node as draining (Meta.Draining) and gossips it: from
// then on no node, this one included, picks it as a channel's Owner, while
// it stays a member (in Members, its presence and subscription counts still
// part of the cluster-wide state). A node that shuts down calls it before
// closing its sockets, so that their removals are decided by the channels'
// new owners from the state (docs/lifecycle.md, "A node that stops"), then
// Leave once they are gone. It waits, like SetMeta, for the update to be
// sent. Calling it again does nothing more.
func (c *Cluster) Drain() error {
	var m Meta
	if err := json.Unmarshal(*c.meta.Load(), &m); err != nil {
		return fmt.Errorf("cluster: drain: decode own meta: %w", err)
	}
	if m.Draining {
		return nil
	}
	m.Draining = true
	if err := c.SetMeta(m); err != nil {
		return fmt.Errorf("cluster: drain: %w", err)
	}
	return nil
}
