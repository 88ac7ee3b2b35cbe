package gateway

import (
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"

	"herald/app"
)

// hubShards spreads the channel index over several locks so that subscribes
// on one channel do not wait for a large fan-out on another.
const hubShards = 64

// localChannel is a channel with at least one subscriber on this node.
// Its subscribers are kept per poller (parts[i] are poller i's), so that a
// fan-out hands each poller its own sockets to write (Gateway.Deliver), and
// only poller i changes parts[i] (subscribes and unsubscribes run on the
// connection's poller), under the shard's lock. A slot in a slice costs 8
// bytes where a map entry cost about twice that (docs/design.md, "Idle
// memory").
type localChannel struct {
	app   *app.App // the app when the channel got its first local subscriber
	name  string
	parts [][]*Conn     // by poller index; a connection's place is its subscription's idx
	n     int           // subscribers in all parts
	last  atomic.Uint64 // serial of the last event delivered here (the socket inspector, inspect.go)
}

type chanKey struct {
	app  string // app id
	name string
}

type hubShard struct {
	mu    sync.RWMutex
	chans map[chanKey]*localChannel
	peak  int // most channels since chans was last rebuilt (remove)
	// occ orders the shard's reports of local counts to the presence
	// registry (occupancyChanged), so the last one reported is the current
	// count. Taken without mu, before the registry's lock.
	occ sync.Mutex
	_   [32]byte // keep shards on separate cache lines
}

// hub is the node's local channel index: which connections of this node are
// subscribed to which channel. Lock order (docs/locks.md): a hub shard lock
// before Conn.mu.
type hub struct {
	seed   maphash.Seed
	shards [hubShards]hubShard
}

func newHub() *hub {
	h := &hub{seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].chans = make(map[chanKey]*localChannel)
	}
	return h
}

func (h *hub) shard(app, name string) *hubShard {
	var mh maphash.Hash
	mh.SetSeed(h.seed)
	mh.WriteString(app)
	mh.WriteByte(0)
	mh.WriteString(name)
	return &h.shards[mh.Sum64()%hubShards]
}

// add subscribes c to the channel (c must not be subscribed already: the
// caller checks its subscriptions). It returns the channel, c's place in
// it (the subscription's idx, for remove), and whether c is the channel's
// first local subscriber. Called on c's poller.
func (h *hub) add(c *Conn, name string) (lc *localChannel, idx int32, first bool) {
	s := h.shard(c.app.ID, name)
	k := chanKey{c.app.ID, name}
	pi := c.poller.idx
	s.mu.Lock()
	defer s.mu.Unlock()
	lc = s.chans[k]
	if lc == nil {
		lc = &localChannel{app: c.app, name: name, parts: make([][]*Conn, len(c.poller.g.pollers))}
		s.chans[k] = lc
		s.peak = max(s.peak, len(s.chans))
		first = true
	}
	part := lc.parts[pi]
	if part == nil {
		part = make([]*Conn, 0, 1)
	}
	idx = int32(len(part))
	lc.parts[pi] = append(part, c)
	lc.n++
	return lc, idx, first
}

// remove unsubscribes c, whose subscription to the channel is s, and
// reports whether the channel has no local subscriber left. The last
// subscriber of c's part takes its place, and that connection's
// subscription learns its new idx. Called on c's poller, which owns every
// connection of the part.
func (h *hub) remove(c *Conn, s *subscription) (last bool) {
	lc := s.lc
	sh := h.shard(lc.app.ID, lc.name)
	pi := c.poller.idx
	sh.mu.Lock()
	defer sh.mu.Unlock()
	part := lc.parts[pi]
	i := int(s.idx)
	if i >= len(part) || part[i] != c {
		if i = slices.Index(part, c); i < 0 {
			return false // not in the index (cannot happen: join adds before it records)
		}
	}
	end := len(part) - 1
	if moved := part[end]; moved != c {
		part[i] = moved
		for j := range moved.subs {
			if moved.subs[j].lc == lc {
				moved.subs[j].idx = int32(i)
				break
			}
		}
	}
	part[end] = nil
	part = part[:end]
	switch {
	case len(part) == 0:
		part = nil
	case cap(part) > 64 && len(part) < cap(part)/4:
		// A slice keeps the array of its largest size: give back a
		// channel's memory once most of its subscribers have left.
		part = append(make([]*Conn, 0, 2*len(part)), part...)
	}
	lc.parts[pi] = part
	lc.n--
	if lc.n > 0 {
		return false
	}
	delete(sh.chans, chanKey{lc.app.ID, lc.name})
	sh.chans, sh.peak = shrunk(sh.chans, sh.peak)
	return true
}

// shrunk returns m rebuilt at its size when it has fallen to a quarter of
// its peak: a Go map keeps the buckets of its largest size, so a shard
// that once had 100,000 channels would hold their memory after they
// left. Rebuilding costs one copy per four-fold fall.
func shrunk[K comparable, V any](m map[K]V, peak int) (map[K]V, int) {
	if peak < 256 || len(m) >= peak/4 {
		return m, peak
	}
	n := make(map[K]V, len(m))
	for k, v := range m {
		n[k] = v
	}
	return n, len(n)
}

// fanout calls fn for every local subscriber of the channel, holding the
// shard's read lock, and returns how many there were; a serial above 0 is
// recorded as the channel's last. fn must not call back into the hub; it
// may take Conn.mu. Lock order: docs/locks.md.
func (h *hub) fanout(app, name string, serial uint64, fn func(*Conn)) int {
	s := h.shard(app, name)
	s.mu.RLock()
	defer s.mu.RUnlock()
	lc := s.chans[chanKey{app, name}]
	if lc == nil {
		return 0
	}
	if serial > 0 {
		lc.last.Store(serial)
	}
	for _, part := range lc.parts {
		for _, c := range part {
			fn(c)
		}
	}
	return lc.n
}

// snapshot appends the channel's local subscribers, poller by poller, to
// out[i] (one per poller), holding the shard's read lock, and returns how
// many there were; a serial above 0 is recorded as the channel's last
// under the same lock, so a connection is either in the snapshot or
// entered the index after last was set (resume.go relies on it).
func (h *hub) snapshot(app, name string, serial uint64, out []*batch) int {
	s := h.shard(app, name)
	s.mu.RLock()
	defer s.mu.RUnlock()
	lc := s.chans[chanKey{app, name}]
	if lc == nil {
		return 0
	}
	if serial > 0 {
		lc.last.Store(serial)
	}
	for i, part := range lc.parts {
		if len(part) > 0 {
			out[i].conns = append(out[i].conns, part...)
		}
	}
	return lc.n
}

// last returns the serial of the last event delivered on the channel here,
// 0 when it has no local subscriber. Every event delivered before a
// subscriber entered the index (add) is at or below what last returns after.
func (h *hub) last(app, name string) uint64 {
	s := h.shard(app, name)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if lc := s.chans[chanKey{app, name}]; lc != nil {
		return lc.last.Load()
	}
	return 0
}

// count returns the number of local subscriptions to a channel.
func (h *hub) count(app, name string) int {
	s := h.shard(app, name)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if lc := s.chans[chanKey{app, name}]; lc != nil {
		return lc.n
	}
	return 0
}

// channels calls fn for every locally occupied channel of an app with its
// local subscription count.
func (h *hub) channels(app string, fn func(name string, subs int)) {
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for k, lc := range s.chans {
			if k.app == app {
				fn(k.name, lc.n)
			}
		}
		s.mu.RUnlock()
	}
}
