package gateway

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"herald/app"
)

// hubShards spreads the channel index over several locks so that subscribes
// on one channel do not wait for a large fan-out on another.
const hubShards = 64

// localChannel is a channel with at least one subscriber on this node.
type localChannel struct {
	app  *app.App // the app when the channel got its first local subscriber
	name string
	subs map[*Conn]struct{}
	last atomic.Uint64 // serial of the last event delivered here (the socket inspector, inspect.go)
	peak int           // most subscribers since subs was last rebuilt (remove)
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

// add subscribes c to the channel. It returns the channel, whether c was
// already subscribed, and whether c is the channel's first local subscriber.
func (h *hub) add(c *Conn, name string) (lc *localChannel, dup, first bool) {
	s := h.shard(c.app.ID, name)
	k := chanKey{c.app.ID, name}
	s.mu.Lock()
	defer s.mu.Unlock()
	lc = s.chans[k]
	if lc == nil {
		lc = &localChannel{app: c.app, name: name, subs: make(map[*Conn]struct{}, 1)}
		s.chans[k] = lc
		s.peak = max(s.peak, len(s.chans))
		first = true
	}
	if _, dup = lc.subs[c]; !dup {
		lc.subs[c] = struct{}{}
		lc.peak = max(lc.peak, len(lc.subs))
	}
	return lc, dup, first
}

// remove unsubscribes c and reports whether the channel has no local
// subscriber left.
func (h *hub) remove(c *Conn, lc *localChannel) (last bool) {
	s := h.shard(lc.app.ID, lc.name)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(lc.subs, c)
	if len(lc.subs) > 0 {
		lc.subs, lc.peak = shrunk(lc.subs, lc.peak)
		return false
	}
	delete(s.chans, chanKey{lc.app.ID, lc.name})
	s.chans, s.peak = shrunk(s.chans, s.peak)
	return true
}

// shrunk returns m rebuilt at its size when it has fallen to a quarter of
// its peak: a Go map keeps the buckets of its largest size, so a channel
// that once had 100,000 subscribers would hold their memory after they
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
	for c := range lc.subs {
		fn(c)
	}
	return len(lc.subs)
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
		return len(lc.subs)
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
				fn(k.name, len(lc.subs))
			}
		}
		s.mu.RUnlock()
	}
}
