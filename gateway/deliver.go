package gateway

import (
	"sync/atomic"
	"time"

	"herald/bus"
	"herald/protocol"
)

// A live event's fan-out runs on the pollers (Gateway.Deliver, Flush): the
// delivery shard that received it copies the channel's subscribers of each
// poller into a batch for that poller, and the poller queues the frame to
// each of them and writes every socket it queued to once, after the whole
// batch. So one event to 10,000 local subscribers is written by every
// poller in parallel, each to its own sockets, and coalescing is kept: all
// events a socket got in one batch (and in every batch the poller takes in
// one wake-up) go out in one writev.
//
// A small channel's event (at most directMax local subscribers) is written
// by the shard itself while none of the shard's batches waits at a poller:
// then every earlier event of the channel is out already, so the order
// holds, and the event is out one thread hop sooner.
//
// Exactly-once and order are what they were when the shard wrote itself:
// the set of sockets an event goes to is taken under the hub shard's lock
// with the channel's last serial (hub.snapshot), one channel is always
// delivered by one shard, a shard's batches reach a poller in order, and
// the resume hold is checked under Conn.mu when the frame is queued
// (holdLocked), as before. A socket that closed in between is skipped; one
// that unsubscribed in between gets the event, which was published while
// it was subscribed.

// delivery is one event in a batch: the frame and the end of its sockets in
// batch.conns (they start where the previous delivery's end).
type delivery struct {
	frame   []byte
	channel string
	serial  uint64
	prev    uint64 // bus.Message.PrevSerial
	excl    protocol.SocketID
	end     int
}

// batch is a delivery shard's events for one poller since its last Flush.
type batch struct {
	shard  int // the delivery shard that made it (Gateway.outstanding)
	msgs   []delivery
	conns  []*Conn
	marked int        // len(conns) when the last delivery was recorded
	mark   *flushMark // the sampled Flush that handed it over, or nil
}

// flushMark is one sampled Flush (Gateway.FlushObserved) whose batches went
// to pollers: each poller releases it when its batch is written, and the
// last release takes the delivery-latency sample, so that it ends at the
// socket write of the slowest poller, not at the hand-over.
type flushMark struct {
	left   atomic.Int32 // batches not yet written, plus the Flush's own reference
	stored int64        // Unix nanoseconds (bus.Bus.storedAt)
	obs    bus.Observer
}

func (g *Gateway) newMark(stored int64, obs bus.Observer) *flushMark {
	m, ok := g.marks.Get().(*flushMark)
	if !ok {
		m = new(flushMark)
	}
	m.stored, m.obs = stored, obs
	m.left.Store(1)
	return m
}

// done releases one reference; nil-safe.
func (m *flushMark) done(g *Gateway) {
	if m == nil || m.left.Add(-1) != 0 {
		return
	}
	m.obs.Observe(float64(time.Now().UnixNano()-m.stored) / 1e9)
	m.obs = nil
	g.marks.Put(m)
}

// directMax is the largest fan-out a delivery shard writes itself, when it
// has nothing waiting at a poller (Gateway.Deliver): for a few sockets the
// hand-over to the pollers costs more than the writes, in latency.
const directMax = 64

// maxKeptBatch is the most socket slots a recycled batch keeps (a batch
// that grew past it is dropped, so a burst does not pin its memory).
const maxKeptBatch = 64 << 10

func (g *Gateway) newBatch() *batch {
	if b, ok := g.batches.Get().(*batch); ok {
		return b
	}
	return &batch{}
}

func (g *Gateway) recycle(b *batch) {
	if cap(b.conns) > maxKeptBatch || cap(b.msgs) > 4096 {
		return
	}
	clear(b.conns)
	clear(b.msgs)
	b.conns, b.msgs, b.marked, b.mark = b.conns[:0], b.msgs[:0], 0, nil
	g.batches.Put(b)
}

// maxQueued bounds what waits for one poller, counted as socket slots plus
// events (a batch's len(conns)+len(msgs)): past it the delivery shard waits
// (deliver), as it waited for its own writes before the pollers wrote, so a
// poller that falls behind slows its shards (and NATS buffers, with its own
// limits) instead of growing this queue. 16 MiB of slots a poller: about
// 400 events to 5,000 sockets, so that a burst still coalesces deeply
// (deliverSome), as a shard drain of up to bus.MaxDrain events did.
const maxQueued = 1 << 21

// deliver queues a batch for the poller, first waiting while the poller has
// maxQueued or more still to deliver; false when the poller is stopping
// (the batch stays the shard's, to be dropped with the rest).
func (p *poller) deliver(b *batch) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.queued >= maxQueued && !p.stopping {
		p.taken.Wait()
	}
	if p.stopping {
		b.conns, b.msgs, b.marked = b.conns[:0], b.msgs[:0], 0
		return false
	}
	if len(p.batches) == 0 {
		p.wake() // under p.mu: shutdown, which closes wakefd, follows a stopping seen under it
	}
	p.batches = append(p.batches, b)
	p.queued += len(b.conns) + len(b.msgs)
	return true
}

// maxUnit bounds the events one delivery unit coalesces (about a shard's
// drain, bus.MaxDrain): a socket gets a unit's events in one writev, and a
// reader that keeps up is not judged slow (enqueueLocked) on a backlog many
// units deep.
const maxUnit = 1024

// deliverSome delivers the batches the poller took, the first ones up to
// maxUnit events as one unit: every event of the unit is queued to its
// sockets, then each socket it queued to is written once. So when the
// poller falls behind, the events waiting for a socket go out together, as
// they did when a shard wrote a whole drain at once; a poller that keeps
// up gets one event a batch and writes it straight away. Between two
// units, the poller's epoll_wait (with no wait while work is left) lets it
// read its sockets and write those whose send buffer has room again
// (EPOLLOUT). Poller only.
func (p *poller) deliverSome() {
	if len(p.work) == 0 {
		return
	}
	n, events, slots := 0, 0, 0
	for n < len(p.work) && (n == 0 || events+len(p.work[n].msgs) <= maxUnit) {
		events += len(p.work[n].msgs)
		slots += len(p.work[n].conns) + len(p.work[n].msgs)
		n++
	}
	unit := p.work[:n]
	if events == 1 {
		p.writeOne(unit[0])
	} else {
		p.runUnit(unit)
	}
	p.mu.Lock()
	p.queued -= slots
	p.taken.Broadcast()
	p.mu.Unlock()
	for i, b := range unit {
		b.mark.done(p.g)
		p.g.outstanding[b.shard].Add(-1)
		p.g.recycle(b)
		unit[i] = nil
	}
	p.work = p.work[n:]
	if len(p.work) == 0 {
		p.work = nil
	}
}

// writeOne delivers a unit of one event: nothing to coalesce, so each
// socket is written as it is reached (writeLocked), with no queue slice
// made per socket.
func (p *poller) writeOne(b *batch) {
	d := &b.msgs[0]
	for _, c := range b.conns {
		if c.id == d.excl && d.excl != (protocol.SocketID{}) {
			continue
		}
		c.mu.Lock()
		if c.state() == stateOpen && (c.replays == nil || !c.holdLocked(d.channel, d.serial, d.prev, d.frame)) {
			c.writeLocked(d.frame)
		}
		c.mu.Unlock()
	}
}

// runUnit queues every event of the unit's batches, in order, then writes
// each socket it queued to once.
func (p *poller) runUnit(unit []*batch) {
	dirty := p.dirty
	for _, b := range unit {
		start := 0
		for _, d := range b.msgs {
			for _, c := range b.conns[start:d.end] {
				if c.id == d.excl && d.excl != (protocol.SocketID{}) {
					continue
				}
				c.mu.Lock()
				if c.state() == stateOpen && (c.replays == nil || !c.holdLocked(d.channel, d.serial, d.prev, d.frame)) &&
					c.enqueueLocked(d.frame) && !c.dirty {
					c.dirty = true
					dirty = append(dirty, c)
				}
				c.mu.Unlock()
			}
			start = d.end
		}
	}
	for _, c := range dirty {
		c.mu.Lock()
		c.dirty = false
		c.flushLocked()
		c.mu.Unlock()
	}
	clear(dirty)
	p.dirty = dirty[:0]
	if cap(p.dirty) > maxKeptBatch {
		p.dirty = nil
	}
}
