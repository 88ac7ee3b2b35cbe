package gateway

import (
	"context"
	"sync"
	"time"

	"herald/app"
	"herald/bus"
	"herald/protocol"
)

// CacheReader reads the last event of cache channels (bus.Bus does, from
// JetStream).
type CacheReader interface {
	LastEvent(ctx context.Context, app, channel string) (bus.CachedEvent, bool, error)
}

const (
	cacheWorkers     = 4
	cacheQueueLen    = 4096
	cacheReadTimeout = 2 * time.Second
	// countEvery is how often subscription_count events go out for large
	// channels whose count changed (docs/protocol.md §2.9: at most every 5 s
	// above 100 subscribers); smaller channels get one on every change.
	countEvery     = 5 * time.Second
	countThreshold = 100
)

type cacheJob struct {
	c    *Conn
	name string
}

// sendCached queues the cache lookup for a new subscriber of a cache
// channel; a worker sends the cached event or pusher:cache_miss. The lookup
// waits on the bus, so it never runs on the poller. When the queue is full
// the subscriber gets pusher:cache_miss at once: under overload a missed
// cache beats a stalled poller.
func (g *Gateway) sendCached(c *Conn, name string) {
	if g.cfg.Cache == nil {
		g.cacheMiss(c, name)
		return
	}
	select {
	case g.cacheJobs <- cacheJob{c, name}:
	default:
		g.cacheMiss(c, name)
	}
}

// cacheMiss sends pusher:cache_miss and, if the app wants it, the
// cache_miss webhook (de-duplicated by the sink).
func (g *Gateway) cacheMiss(c *Conn, name string) {
	c.sendJSON(protocol.AppendCacheMiss(nil, name))
	if g.cfg.Webhooks == nil {
		return
	}
	if a := g.appOf(c); a.WantsWebhook(app.WebhookCacheMiss, name) {
		g.cfg.Webhooks.CacheMiss(a, name)
	}
}

func (g *Gateway) cacheWorker() {
	for job := range g.cacheJobs {
		ctx, cancel := context.WithTimeout(context.Background(), cacheReadTimeout)
		ev, ok, err := g.cfg.Cache.LastEvent(ctx, job.c.app.ID, job.name)
		cancel()
		if err != nil {
			g.log.Warn("cache read failed", "app", job.c.app.ID, "channel", job.name, "err", err)
		}
		if ok {
			_ = job.c.send(eventFrame(ev.Payload, ev.Serial))
		} else {
			g.cacheMiss(job.c, job.name)
		}
	}
}

// counts collects large channels whose subscription count changed, for apps
// that send subscription_count events.
type counts struct {
	mu    sync.Mutex
	dirty map[*localChannel]struct{}
	// send serializes immediate count events, so that of two concurrent
	// changes the later event carries the later count.
	send sync.Mutex
}

// countChanged reports a channel's new subscription count to its
// subscribers: at once for channels of up to 100 subscribers, from countLoop
// for larger ones. Presence channels have member events instead.
// Lock order: docs/locks.md (counts.send, then hub shard, then Conn.mu).
func (g *Gateway) countChanged(lc *localChannel) {
	if a, ok := g.cfg.Apps.ByID(lc.app.ID); !ok || !a.SubscriptionCount { // as the registry has it now (apps.go)
		return
	}
	if kind, _ := protocol.Classify(lc.name); kind == protocol.Presence {
		return
	}
	g.counts.send.Lock()
	n := g.hub.count(lc.app.ID, lc.name)
	if n <= countThreshold {
		if n > 0 {
			g.sendCount(lc, n)
		}
		g.counts.send.Unlock()
		return
	}
	g.counts.send.Unlock()
	g.counts.mu.Lock()
	if g.counts.dirty == nil {
		g.counts.dirty = make(map[*localChannel]struct{})
	}
	g.counts.dirty[lc] = struct{}{}
	g.counts.mu.Unlock()
}

// occupancyChanged reports the channel's local subscription count to the
// presence registry, which merges every node's count into cluster-wide
// occupancy: the lifecycle events channel_occupied, channel_vacated and
// subscription_count (docs/lifecycle.md). Reports of one hub shard are
// serialized, so a subscribe and an unsubscribe racing on two pollers
// cannot leave a stale count behind. It must be called with no hub shard,
// Conn or registry lock held: the registry's Listener takes them.
// Lock order: docs/locks.md.
func (g *Gateway) occupancyChanged(lc *localChannel) {
	s := g.hub.shard(lc.app.ID, lc.name)
	s.occ.Lock()
	g.presence.SetSubscribers(lc.app.ID, lc.name, g.hub.count(lc.app.ID, lc.name))
	s.occ.Unlock()
}

// countLoop sends pusher_internal:subscription_count to the subscribers of
// every channel whose count changed since the last tick.
// Lock order: docs/locks.md (counts.send, then hub shard, then Conn.mu).
func (g *Gateway) countLoop() {
	defer g.wg.Done()
	t := time.NewTicker(countEvery)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		g.trimAfterFlood()
		g.counts.mu.Lock()
		dirty := g.counts.dirty
		g.counts.dirty = nil
		g.counts.mu.Unlock()
		for lc := range dirty {
			g.counts.send.Lock()
			if n := g.hub.count(lc.app.ID, lc.name); n > countThreshold {
				g.sendCount(lc, n)
			}
			g.counts.send.Unlock()
		}
	}
}

// sendCount sends pusher_internal:subscription_count to every local
// subscriber of the channel. Lock order: docs/locks.md (hub shard, then
// Conn.mu).
func (g *Gateway) sendCount(lc *localChannel, n int) {
	msg := protocol.AppendSubscriptionCount(nil, lc.name, n)
	frame := textFrame(msg)
	g.hub.fanout(lc.app.ID, lc.name, 0, func(c *Conn) { _ = c.send(frame) })
}

// UserCount returns the number of distinct users in a presence channel.
func (g *Gateway) UserCount(app, channel string) int { return g.presence.Count(app, channel) }

// Users returns the distinct user ids in a presence channel, in join order.
func (g *Gateway) Users(app, channel string) []string {
	ms := g.presence.Members(app, channel)
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}
