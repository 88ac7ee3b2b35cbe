package presence

import "strings"

// ChannelRef names one channel of one app.
type ChannelRef struct{ App, Channel string }

// Channels lists the channels of the apps for which want reports true that
// have state in the union view: a subscriber or a presence member anywhere.
// The webhook ledger (lifecycle/ledger.go) reads it when ownership moves, to
// find channels whose transitions no owner decided yet. want runs under the
// registry's lock: it must not block or call back into the registry.
func (r *Local) Channels(want func(app string) bool) []ChannelRef {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := make(map[key]struct{}, len(r.subs)+len(r.channels))
	var out []ChannelRef
	add := func(k key) {
		if _, dup := seen[k]; dup || !want(k.app) {
			return
		}
		seen[k] = struct{}{}
		out = append(out, ChannelRef{k.app, k.channel})
	}
	for k := range r.subs {
		add(k)
	}
	for k := range r.channels {
		add(k)
	}
	return out
}

// Channels lists the channels of the apps for which want reports true that
// have state in this node's union view, as Local.Channels does. It holds
// Gossip's lock while it walks the state.
func (g *Gossip) Channels(want func(app string) bool) []ChannelRef {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.st.Channels(want)
}

// Channels lists the channels of the apps for which want reports true with
// a subscriber (occupancy) or a member (presence) in the union view.
func (s *State) Channels(want func(app string) bool) []ChannelRef {
	seen := make(map[key]struct{})
	var out []ChannelRef
	for k, c := range s.channels {
		name := k.channel
		if isOccupancy(k) {
			if c.subs == 0 {
				continue
			}
			name = strings.TrimPrefix(name, occupancyPrefix)
		} else if len(c.union) == 0 {
			continue
		}
		ref := key{k.app, name}
		if _, dup := seen[ref]; dup || !want(k.app) {
			continue
		}
		seen[ref] = struct{}{}
		out = append(out, ChannelRef{k.app, name})
	}
	return out
}
