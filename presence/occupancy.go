package presence

import (
	"errors"
	"strings"
)

// This file is channel occupancy in the State (state.go): how many
// subscribers each channel has on each node, and their cluster-wide sum.
// See docs/presence.md ("Occupancy").
//
// Occupancy reuses the member CRDT whole. A node's subscriber count of
// channel (app, ch) is one entry of its own slice, under the channel name
// occupancyPrefix+ch and the user id "": Count is the node's local
// subscribers, Seq orders its changes, and deltas, snapshots, gap repair,
// tombstones and dead or superseded owners all work as for members, with no
// new message type on the wire (gossip.go). Only settle differs: the union
// of an occupancy channel is the sum of the live owners' counts, and its
// transitions are occupancy Changes instead of member ones.

// occupancyPrefix starts the State's name of a channel's occupancy entries.
// No legal channel name contains '!': protocol.ValidateChannelName allows
// [A-Za-z0-9_\-=@,.;] and a leading '#' only, so occupancy entries never
// share a key with a presence channel's members, and a presence channel can
// have both.
const occupancyPrefix = "!"

// ErrReservedChannel is returned by Gossip's Join for a channel name that
// starts with '!', which no legal channel name does: the State keeps
// occupancy under such names.
var ErrReservedChannel = errors.New("presence: reserved channel name")

func occupancyKey(app, ch string) key { return key{app, occupancyPrefix + ch} }

// isOccupancy reports whether k holds occupancy entries, not members.
func isOccupancy(k key) bool { return strings.HasPrefix(k.channel, occupancyPrefix) }

// SetSubscribers sets this node's subscriber count of channel (app, ch)
// (n <= 0: none) and reports the cluster-wide change, if any. The change
// is queued for TakeDeltas; setting the count already held does nothing.
func (s *State) SetSubscribers(app, ch string, n int) {
	n = max(n, 0)
	k := occupancyKey(app, ch)
	c := s.channels[k]
	var e *Entry
	if c != nil {
		e = c.slices[s.self][""]
	}
	if e == nil && n == 0 || e != nil && e.Count == n {
		return
	}
	c = s.channel(k)
	own := c.slices[s.self]
	if own == nil {
		own = make(map[string]*Entry, 1)
		c.slices[s.self] = own
		s.ownChans[k] = struct{}{}
	}
	s.seq++
	if e == nil {
		e = &Entry{Since: s.seq}
		own[""] = e
	}
	e.Count = n
	e.Seq = s.seq
	s.out = append(s.out, Delta{Owner: s.self, App: app, Channel: k.channel, Entry: *e})
	if n == 0 {
		delete(c.slices, s.self) // an owner keeps no tombstones of its own
		delete(s.ownChans, k)
	}
	if change, ok := s.settleOccupancy(k, c); ok {
		s.emit(change)
	}
	s.gc(k, c)
}

// Subscribers returns the cluster-wide subscriber count of (app, ch): the
// sum of the live owners' counts, as last reported.
func (s *State) Subscribers(app, ch string) int {
	if c := s.channels[occupancyKey(app, ch)]; c != nil {
		return c.subs
	}
	return 0
}

// settleOccupancy recomputes the cluster-wide count of occupancy channel k
// and returns the Change to report, if it changed. Every entry with a
// count above zero counts, whatever its user id: a node writes only "", and
// summing them all keeps every node's view the same whatever a peer sent.
func (s *State) settleOccupancy(k key, c *chanState) (Change, bool) {
	sum := 0
	for _, sl := range c.slices {
		for _, e := range sl {
			sum += max(e.Count, 0)
		}
	}
	was := c.subs
	c.subs = sum
	return occupancyChange(k.app, strings.TrimPrefix(k.channel, occupancyPrefix), was, sum)
}
