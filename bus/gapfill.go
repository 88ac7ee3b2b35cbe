package bus

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
)

// Live gap repair.
//
// The stream republishes each stored message once, core NATS, and only on
// its leader (docs/stack.md §8): a message stored during a leader change
// can miss its live delivery. The next message on the channel exposes the
// loss: its PrevSerial (Nats-Last-Sequence, the previous serial on the same
// subject) is above the last serial this node delivered on the channel.
//
// So each delivery shard remembers, per live NATS subscription, the last
// serial it delivered (only for subscriptions that exist: an entry goes
// when its subscription has been dropped, see prune). For a live message:
//   - the first one since the subscription was made is delivered as is;
//   - Serial <= the remembered one: a duplicate (a message the repair
//     already delivered, arriving late), dropped; unless it was stored
//     after the remembered one, which means the stream was made again
//     (serials restart): then it is delivered and tracking starts over;
//   - PrevSerial > the remembered one: the messages in between were lost.
//     The shard reads them from the stream (readSubject from the remembered
//     serial up to this one, exclusive), delivers them in order, then this
//     one. It checks the read reached PrevSerial (a direct get answered by
//     a lagging replica can be short) and reads again a few times if not.
//     A repair that still falls short, or fails, is logged and counted, and
//     the message is delivered anyway.
//
// The repair runs on the shard goroutine, which waits for it (at most
// gapRepairWait; its other channels wait meanwhile in the shard queue):
// gaps are rare, and delivering in order is the point.

const (
	gapRepairWait     = time.Second // one repair, all its reads together
	gapRepairAttempts = 3           // reads per repair when one falls short
	gapRepairPause    = 20 * time.Millisecond
	gapPruneMin       = 1024             // a shard's map is not pruned below this size...
	gapPruneEvery     = 30 * time.Second // ...unless this long has passed since the last prune
)

// gapShard is one delivery shard's memory of what it delivered per live
// subscription. Only the shard's goroutine uses it.
type gapShard struct {
	subs     map[*nats.Subscription]*gapEntry
	pruneLen int       // prune when an insert finds len(subs) at this
	prunedAt time.Time // last prune
}

// gapEntry is what a shard remembers of one live subscription.
type gapEntry struct {
	last         uint64 // serial of the last message delivered
	ts           string // its Nats-Time-Stamp as received ("" if none)
	dupLo, dupHi uint64 // the last repair delivered serials in (dupLo, dupHi): their live copies may still come
}

// gapShardOf is shard's gapShard.
func (b *Bus) gapShardOf(shard int) *gapShard {
	hs := &b.hist
	hs.gapOnce.Do(func() { hs.gapShards = make([]gapShard, len(b.shards)) })
	return &hs.gapShards[shard]
}

// checkGap runs for each live message m (with a serial) before it is
// delivered; msg is what m was parsed from. It delivers the messages lost
// before m, if any, and returns how many, and whether m is to be delivered
// (false for a duplicate). It records m as delivered when it returns true.
//
// A serial at or below the last delivered one is a duplicate when the last
// repair delivered it, or when it was stored no later than the last
// delivered message (Nats-Time-Stamp). Otherwise the stream went back (it
// was deleted and made again, or its server lost its store): m is delivered
// and the channel starts over from it.
func (b *Bus) checkGap(shard int, msg *nats.Msg, m *Message) (repaired int, deliver bool) {
	if drop := b.hist.dropLive.Load(); drop != nil && (*drop)(m) {
		return 0, false // test hook: lost on the way
	}
	var ts string
	if v := msg.Header[headerTimeStamp]; len(v) > 0 {
		ts = v[0]
	}
	g := b.gapShardOf(shard)
	e := g.subs[msg.Sub]
	switch {
	case e == nil:
		// The subscription's first live message: events stored since the
		// subscription started may not have reached this node (catchup.go).
		if m.PrevSerial > 0 {
			_, repaired = b.catchup(shard, msg.Sub, m.App, m.Channel, m.Serial, m.PrevSerial)
		}
		b.starts.forget(msg.Sub)
		g.insert(msg.Sub, &gapEntry{last: m.Serial, ts: ts})
		return repaired, true
	case m.Serial <= e.last:
		if (e.dupLo < m.Serial && m.Serial < e.dupHi) || !storedAfter(ts, e.ts) {
			b.hist.duplicates.Add(1)
			b.log.Debug("bus: dropping duplicate live message", "app", m.App, "channel", m.Channel, "serial", m.Serial, "last", e.last)
			return 0, false
		}
		b.log.Warn("bus: live serials went back (stream made again?); delivering from here",
			"app", m.App, "channel", m.Channel, "serial", m.Serial, "last", e.last)
		*e = gapEntry{}
	case m.PrevSerial > e.last:
		repaired = b.repairGap(shard, m, e.last)
		e.dupLo, e.dupHi = e.last, m.Serial
	}
	e.last, e.ts = m.Serial, ts
	return repaired, true
}

// storedAfter reports whether store time stamp a is later than b; false if
// either is missing or malformed.
func storedAfter(a, b string) bool {
	ta, err := time.Parse(time.RFC3339Nano, a)
	if err != nil {
		return false
	}
	tb, err := time.Parse(time.RFC3339Nano, b)
	if err != nil {
		return false
	}
	return ta.After(tb)
}

// insert remembers a subscription not seen before, unless it has been
// dropped already (a message still queued from it). It prunes first when
// the map has doubled since the last prune or gapPruneEvery passed.
func (g *gapShard) insert(sub *nats.Subscription, e *gapEntry) {
	if g.subs == nil {
		g.subs = make(map[*nats.Subscription]*gapEntry)
		g.pruneLen = gapPruneMin
		g.prunedAt = time.Now()
	}
	if len(g.subs) >= g.pruneLen || (len(g.subs) > 0 && time.Since(g.prunedAt) >= gapPruneEvery) {
		g.prune()
	}
	if !sub.IsValid() {
		return
	}
	g.subs[sub] = e
}

// prune forgets the subscriptions that have been dropped.
func (g *gapShard) prune() {
	for sub := range g.subs {
		if !sub.IsValid() {
			delete(g.subs, sub)
		}
	}
	g.pruneLen = max(gapPruneMin, 2*len(g.subs))
	g.prunedAt = time.Now()
}

// repairGap reads and delivers the messages of m's channel after last and
// before m (see the top of this file) and returns how many it delivered.
// It flushes the Sink before and after, and every MaxDrain deliveries, so
// a Flush never follows more than MaxDrain Deliver calls.
func (b *Bus) repairGap(shard int, m *Message, last uint64) int {
	b.hist.gapRepairs.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), gapRepairWait)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // Close must not wait out the repair
		select {
		case <-b.done:
			cancel()
		case <-stop:
		}
	}()

	b.sink.Flush(shard)
	subj := StoredSubject(m.App, m.Channel)
	rm := &Message{App: m.App, Channel: m.Channel}
	prev, n, unflushed := last, 0, 0
	deliver := func(serial uint64, payload []byte, exclude string) error {
		*rm = Message{App: m.App, Channel: m.Channel, Serial: serial, PrevSerial: prev, Exclude: exclude, Payload: payload}
		b.sink.Deliver(shard, rm)
		*rm = Message{}
		prev = serial
		n++
		if unflushed++; unflushed == MaxDrain {
			b.sink.Flush(shard)
			unflushed = 0
		}
		return nil
	}
	var err error
	for attempt := 1; ; attempt++ {
		_, _, err = b.readSubject(ctx, m.App, subj, prev, m.Serial, deliver)
		if err == nil && prev >= m.PrevSerial {
			break
		}
		if attempt == gapRepairAttempts || ctx.Err() != nil || b.closed.Load() || !pause(ctx, gapRepairPause*time.Duration(attempt)) {
			b.hist.gapFailures.Add(1)
			if !b.closed.Load() {
				b.log.Warn("bus: live gap not repaired; delivering on",
					"app", m.App, "channel", m.Channel, "after", last, "want", m.PrevSerial, "got", prev, "serial", m.Serial, "err", err)
			}
			break
		}
	}
	if unflushed > 0 {
		b.sink.Flush(shard)
	}
	b.hist.gapMessages.Add(uint64(n))
	return n
}

// catchupTick handles a new subscription's catch-up tick: when no live
// message came yet, the events stored since it started are delivered.
func (b *Bus) catchupTick(shard int, msg *nats.Msg, app, channel string) int {
	g := b.gapShardOf(shard)
	if g.subs[msg.Sub] != nil {
		return 0 // a live message came first and was checked then
	}
	last, n := b.catchup(shard, msg.Sub, app, channel, 0, 0)
	b.starts.forget(msg.Sub)
	if n > 0 {
		g.insert(msg.Sub, &gapEntry{last: last})
	}
	return n
}
